"""Which per-frame signal best tells when a shortcut frame goes wrong? (a study for AdaptiveKeyframes)

usage: python benchmarks/keyframe_signals.py [--quick] [--seeds 0 1] [--steps 600] [--threads 2]

Uses the blocks `benchmarks/keyframes.py` distils (results/blocks/, same settings; it distils
them if missing), in the half layout: two of the signals read that layout's reduced taps. For every frame t of a stream and every keyframe it could have
(t-1 .. t-(M-1)), it measures the shortcut frame's squared error against the teacher and a
set of candidate signals, all computable before the frame's decision. Then it replays the
threshold policy "keyframe when signal > threshold, always at M" exactly for every
threshold, for each signal, and reports how far its PSNR-vs-MACs curve lies above
FixedInterval(2..5). Signals are chosen on the *training* stream (bikes training frames);
the held-out stream (bikes 190-249, then carphone) only reports.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import cartoon_preset, machine, write  # noqa: E402
from keyframes import distilled_block  # noqa: E402

from shortcutify import AdaptiveKeyframes, FixedInterval  # noqa: E402
from shortcutify.demo.teachers import load_teacher, read_split  # noqa: E402
from shortcutify.demo.video import read_video, sample_video  # noqa: E402
from shortcutify.ops import warp  # noqa: E402
from shortcutify.train.evaluate import output_image  # noqa: E402


def _rel_l1(a, b):
    return float((a - b).abs().sum() / b.abs().sum().clamp_min(1e-12))


def _signals(sv, a, a_ref, x, x_ref, ref, prev_a, acc_ref, acc_abs) -> dict[str, float]:
    """Candidate signals of frame (a, x) against keyframe (a_ref, x_ref, prepared reference ref)."""
    out = {}
    out["enc_l1"] = _rel_l1(a, a_ref)  # distance to the keyframe (AdaptiveKeyframes before the study)
    out["enc_l2"] = float((a - a_ref).norm() / a_ref.norm().clamp_min(1e-12))
    d = (a - a_ref).abs().mean(1).flatten()
    scale = a_ref.abs().mean()
    out["enc_p90"] = float(torch.quantile(d, 0.9) / scale)
    out["enc_p99"] = float(torch.quantile(d, 0.99) / scale)
    out["pix_l1"] = float((x - x_ref).abs().mean())
    out["enc_acc"] = acc_ref + _rel_l1(a, prev_a)  # TeaCache-like: accumulated frame-to-frame change
    # the same, each step over the keyframe's norm (one norm per keyframe, not one per frame)
    out["enc_acc_k"] = (acc_abs + float((a - prev_a).abs().sum())) / float(a_ref.abs().sum())
    # after the block's alignment: the reduced encoder tap against the reduced reference warped by the block's flow
    blk = sv.block
    h = blk.width
    hf, wf = ref.feature.shape[-2:]
    ar = blk.reduce_encoder_tap(a, (hf, wf))
    rr = ref.reduced[:, :h]
    flow = blk.flow_head(torch.cat([ar, rr], dim=1))
    aligned = warp(rr, flow)
    out["aligned_l1"] = _rel_l1(ar, aligned.contiguous())
    out["reduced_l1"] = _rel_l1(ar, rr.contiguous())
    return out


@torch.no_grad()
def measure(sv, videos: list[torch.Tensor], gaps: int) -> dict:
    """e[t, g] (MSE of the shortcut from keyframe t-g) and signals s[name][t, g] over the concatenated stream."""
    total = sum(v.shape[0] for v in videos)
    err = np.full((total, gaps + 1), np.nan)
    sig: dict[str, np.ndarray] = {}
    starts = []
    t0 = 0
    for video in videos:
        starts.append(t0)
        hist = []  # (a, x, ref, acc from this frame's own start) of the last frames
        for i in range(video.shape[0]):
            x = video[i : i + 1]
            key = sv.run_keyframe(x)
            target = output_image(key.output)
            a = key.enc
            for g in range(1, min(gaps, len(hist)) + 1):
                a_ref, x_ref, ref = hist[-g][:3]
                out = output_image(sv.predict(x, reference=ref))
                err[t0 + i, g] = float(((out - target) ** 2).mean())
                # accumulated frame-to-frame change from keyframe t-g to t
                acc = sum(_rel_l1(hist[-j][0], hist[-j - 1][0]) for j in range(1, g)) if g > 1 else 0.0
                acc_abs = sum(float((hist[-j][0] - hist[-j - 1][0]).abs().sum()) for j in range(1, g)) if g > 1 else 0.0
                for name, v in _signals(sv, a, a_ref, x, x_ref, ref, hist[-1][0], acc, acc_abs).items():
                    sig.setdefault(name, np.full((total, gaps + 1), np.nan))[t0 + i, g] = v
            hist.append((a, x, sv.prepare_reference(key)))
            hist = hist[-(gaps + 1):]
        t0 += video.shape[0]
    sig["oracle"] = err.copy()
    return {"err": err, "signals": sig, "starts": starts, "total": total}


def replay(err, signal, starts, thresholds, max_interval):
    """For each threshold: (keyframes, summed shortcut MSE) of the threshold policy; keyframe at every start."""
    n = thresholds.shape[0]
    total = err.shape[0]
    keys = np.zeros(n)
    sse = np.zeros(n)
    since = np.zeros(n, dtype=np.int64)
    for t in range(total):
        if t in starts:
            keys += 1
            since[:] = 0
            continue
        since += 1
        s = signal[t, np.minimum(since, signal.shape[1] - 1)]
        key = (since >= max_interval) | (s > thresholds)
        sse += np.where(key, 0.0, err[t, np.minimum(since, err.shape[1] - 1)])
        keys += key
        since[key] = 0
    return keys, sse


def fixed(err, starts, a):
    total = err.shape[0]
    keys, sse, since = 0, 0.0, 0
    for t in range(total):
        if t in starts or since + 1 >= a:
            keys += 1
            since = 0
            continue
        since += 1
        sse += err[t, since]
    return keys, sse


def curve_margins(meas, name, key_macs, short_macs, max_interval, fixed_macs):
    err, starts, total = meas["err"], meas["starts"], meas["total"]
    sig = meas["signals"][name]
    vals = np.unique(sig[np.isfinite(sig)])
    thr = np.concatenate([[0.0], (vals[:-1] + vals[1:]) / 2, [vals[-1] * 2 + 1]])
    keys, sse = replay(err, sig, starts, thr, max_interval)
    macs = (keys * key_macs + (total - keys) * short_macs) / total
    psnr = 10 * np.log10(4.0 / np.maximum(sse / total, 1e-20))
    order = np.argsort(macs, kind="stable")
    xs, ys = macs[order], psnr[order]
    out = {}
    for a in (2, 3, 4, 5):
        k, s = fixed(err, starts, a)
        fm = (k * fixed_macs[0] + (total - k) * fixed_macs[1]) / total
        fp = 10 * math.log10(4.0 / (s / total))
        # the adaptive curve at fm: the best PSNR among thresholds costing no more than fm (step, not interpolated)
        ok = xs <= fm + 1e-9
        out[a] = (fm, fp, float(ys[ok].max()) - fp if ok.any() else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny teacher, small frames, few steps, one seed (for CI)")
    parser.add_argument("--steps", type=int, default=None, help="distillation steps (default 600, quick 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="block seeds (default 0 1, quick 0)")
    parser.add_argument("--max-interval", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    name, size, car_size, crop = cartoon_preset(args.quick)
    args.steps = args.steps or (40 if args.quick else 600)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    n = 24 if args.quick else None
    teacher, _ = load_teacher(name)
    train = read_split("bikes", "train", size, max_frames=n)
    held = [read_split("bikes", "heldout", size, max_frames=n),
            read_video(sample_video("carphone_pristine"), size=car_size, max_frames=n or 60)]
    results = {}
    for seed in args.seeds:
        # the half layout: the signals aligned_l1 / reduced_l1 read its reduced taps (and the study was made on it)
        sv = distilled_block(teacher, name, train, crop, seed, args.steps, args.max_interval, resolution="half")
        sv.eval()
        gaps = args.max_interval - 1
        for split, videos in (("training", [train]), ("held-out", held)):
            meas = measure(sv, videos, gaps)
            sv.policy = FixedInterval(3)
            fc = sv.cost(videos[0][:1])
            sv.policy = AdaptiveKeyframes()
            ac = sv.cost(videos[0][:1])
            res = {}
            for sname in meas["signals"]:
                m = curve_margins(meas, sname, ac.keyframe.macs, ac.shortcut.macs, args.max_interval, (fc.keyframe.macs, fc.shortcut.macs))
                res[sname] = {a: v[2] for a, v in m.items()}
                print(f"[seed {seed}] {split:<9} {sname:<11} " + "  ".join(
                    f"α={a}: {'n/a' if v is None else f'{v:+.2f}'}" for a, v in res[sname].items()), flush=True)
            # rank correlation of each signal with the error, over all (t, g)
            ok = np.isfinite(meas["err"])
            e = meas["err"][ok]
            for sname, s in meas["signals"].items():
                rs = _spearman(s[ok], e)
                res[sname]["spearman"] = rs
            print(f"[seed {seed}] {split} spearman: " + ", ".join(f"{k} {v['spearman']:.3f}" for k, v in res.items()), flush=True)
            results[f"{seed}/{split}"] = res
    write("keyframe_signals" + ("_quick" if args.quick else ""), {"machine": machine(), "steps": args.steps, "seeds": args.seeds, "results": results,
                               "seconds": time.time() - t_start})
    print(f"done in {time.time() - t_start:.0f} s")


def _spearman(x, y):
    rx = np.argsort(np.argsort(x))
    ry = np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


if __name__ == "__main__":
    main()
