"""Adaptive keyframes against fixed intervals on held-out real video streamed in order.

usage: python benchmarks/keyframes.py [--quick] [--steps N] [--seeds 0 1] [--max-interval M]
       python benchmarks/keyframes.py --choose-default   (how the default threshold was chosen)

Teacher: the cartoon teacher trained here (RecycleGAN-style ResNet; --quick: the tiny one).
One block per seed, distilled on the bikes training frames with the gaps an
``AdaptiveKeyframes(max_interval=M)`` policy produces (1..M-1), serves every policy.
The held-out stream is ``bikes`` frames 190-249 (a scene cut near 242), then ``carphone``,
fed frame by frame as one stream (the change of frame size forces one keyframe), never cut
into clips. For each policy it reports, against the teacher's output on every frame:

* all-frame PSNR: the PSNR of the mean squared error over all frames (keyframes, which
  equal the teacher, count with zero error; a mean of per-frame PSNR would be infinite);
* the mean and the worst PSNR of the shortcut frames, per video;
* the keyframe rate and the measured amortised MACs per frame (each frame counted with the
  fvcore MACs of the path it took, the policy's decision included).

Policies: ``FixedInterval(2..5)``, each also shifted by 1..n-1 frames (:class:`ShiftedInterval`;
a fixed schedule's phase against a scene cut is luck, so each interval is also reported as the
mean over its shifts); ``AdaptiveKeyframes`` with thresholds calibrated on the
*training* frames (one stream) to keyframe rates from 3/4 to 1/5 (:data:`ADAPTIVE_RATES`).
Writes results/keyframes*.json and a PSNR-vs-MACs plot with the keyframes marked; the
distilled blocks are kept in results/blocks/ (not committed) and reused by a later run with
the same settings.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, cartoon_preset, machine, table, write  # noqa: E402

from shortcutify import AdaptiveKeyframes, FixedInterval, __version__, calibrate, distill, load, shortcutify  # noqa: E402
from shortcutify.demo.models import resnet_taps  # noqa: E402
from shortcutify.demo.teachers import load_teacher, read_split  # noqa: E402
from shortcutify.demo.video import read_video, sample_video  # noqa: E402
from shortcutify.train.evaluate import output_image  # noqa: E402
from shortcutify.train.metrics import psnr  # noqa: E402

FIXED = (2, 3, 4, 5)
# adaptive thresholds: calibrated on the training frames to these keyframe rates (those of the
# fixed policies, and denser ones, so that the curve spans the fixed policies' MACs on held-out
# footage that moves less than the training frames)
ADAPTIVE_RATES = (4 / 5, 3 / 4, 7 / 10, 2 / 3, 3 / 5, 11 / 20, 1 / 2, 9 / 20, 17 / 40, 2 / 5, 3 / 8, 7 / 20, 1 / 3, 3 / 10, 1 / 4, 1 / 5)


class ShiftedInterval:
    """``FixedInterval(n)`` with its schedule shifted by ``shift`` frames (0 ≤ shift < n): after a
    keyframe the policy did not ask for (the stream's first frame, a forced one), the next comes
    after ``n − shift`` frames, then every ``n``. A fixed schedule's phase against the footage's
    events (a scene cut) is luck; the benchmark averages the fixed policies over every shift.
    Benchmark-only, one stream."""

    uses_change = False

    def __init__(self, n: int, shift: int) -> None:
        if not 0 <= shift < n:
            raise ValueError(f"shift must be in 0..{n - 1}, got {shift}")
        self.n, self.shift, self._asked, self._target = n, shift, False, n

    @property
    def interval(self) -> int:
        return self.n

    def select(self, signal):
        since = int(signal.since_keyframe[0])
        if since == 1:  # a keyframe just happened: the policy's own (full gap next) or imposed (shifted gap)
            self._target = self.n if self._asked else self.n - self.shift
        self._asked = since >= self._target
        return torch.tensor([self._asked])

    def __repr__(self) -> str:
        return f"ShiftedInterval({self.n}, shift={self.shift})"


def distilled_block(teacher, name: str, train: torch.Tensor, crop: int, seed: int, steps: int, max_interval: int,
                    resolution: str = "auto"):
    """The block every policy of this benchmark (and keyframe_signals.py, with the half layout its signals
    read) serves: distilled on the training frames with the gaps ``AdaptiveKeyframes(max_interval)``
    produces, or loaded from results/blocks/ when an earlier run with the same settings distilled it."""
    torch.manual_seed(seed)
    sv = shortcutify(teacher, *resnet_taps(teacher), train[:1], policy=AdaptiveKeyframes(max_interval=max_interval),
                     resolution=resolution)
    block = f"{sv.block.resolution}{sv.block.width}"  # the block's layout and width are part of the settings
    saved = RESULTS / "blocks" / f"keyframes_{name}_{block}_s{seed}_{steps}_m{max_interval}"
    if (saved / "shortcut_config.json").is_file():
        print(f"[seed {seed}] loading the block distilled earlier from {saved}", flush=True)
        return load(teacher, saved)
    print(f"[seed {seed}] distilling ({steps} steps, gaps 1..{max_interval - 1}) ...", flush=True)
    clips = [train[i : i + 12] for i in range(0, train.shape[0], 12)]
    distill(sv, clips, steps=steps, batch_size=4, lr=2e-3, crop=crop, flip=True, progress=False,
            weights={"feature": 1.0, "alignment": 0.0}, seed=seed)
    sv.save(saved)
    return sv


@torch.no_grad()
def run_stream(sv, videos: dict[str, torch.Tensor], teacher_out: dict[str, torch.Tensor], macs: dict[str, tuple[int, int]]) -> dict:
    """Feed the videos one after the other, frame by frame, as one stream."""
    sv.reset()
    frames = []
    for name, video in videos.items():
        key_macs, short_macs = macs[name]
        for i in range(video.shape[0]):
            out = output_image(sv(video[i : i + 1]))
            ref = teacher_out[name][i : i + 1]
            key = sv.last_was_keyframe
            frames.append({"video": name, "frame": i, "keyframe": key, "macs": key_macs if key else short_macs,
                           "mse": float(((out - ref) ** 2).mean()), "psnr": float(psnr(out, ref).mean())})
    sv.reset()
    return summarise(frames)


def summarise(frames: list[dict]) -> dict:
    mse = sum(f["mse"] for f in frames) / len(frames)
    out = {
        "keyframe_rate": sum(f["keyframe"] for f in frames) / len(frames),
        "macs": sum(f["macs"] for f in frames) / len(frames),
        "psnr_all": 10 * math.log10(4.0 / mse) if mse > 0 else float("inf"),  # data range 2 (tanh outputs)
        "frames": frames,
    }
    for name in dict.fromkeys(f["video"] for f in frames):
        short = [f["psnr"] for f in frames if f["video"] == name and not f["keyframe"]]
        out[name] = {"mean_shortcut_psnr": sum(short) / len(short) if short else float("inf"),
                     "worst_shortcut_psnr": min(short, default=float("inf")),
                     "keyframe_rate": sum(f["keyframe"] for f in frames if f["video"] == name) / sum(f["video"] == name for f in frames)}
    return out


def margins(summary: list[dict], kind: str = "fixed") -> list[tuple[str, float, float | None]]:
    """For each policy of ``kind`` (``fixed``, or ``fixed-mean``: averaged over shifts): its GMACs
    and how far the adaptive curve (linear between its points, by MACs) lies above it there, in
    dB (``None`` outside the adaptive points' MACs)."""
    pts = sorted((s["gmacs"], s["psnr_all"]) for s in summary if s["kind"] == "adaptive")
    out = []
    for s in summary:
        if s["kind"] != kind:
            continue
        x, above = s["gmacs"], None
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= x <= x1:
                above = (y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)) - s["psnr_all"]
                break
        out.append((s["policy"], x, above))
    return out


def choose_default(threads: int) -> None:
    """The threshold giving FixedInterval(3)'s keyframe rate on the bikes training frames, per bundled teacher.

    A rate target needs the encoder taps only (no distilled block); the default is the
    geometric middle of the teachers' thresholds.
    """
    from shortcutify.demo.cli import task_inputs
    from shortcutify.demo.models import vid2vid_taps

    torch.set_num_threads(threads)
    found = {}
    for name in ("cartoon", "vid2vid"):
        gen, labeller = load_teacher(name)
        x = task_inputs(read_split("bikes", "train", (136, 320)), labeller)
        first = tuple(t[:1] for t in x) if isinstance(x, tuple) else x[:1]
        sv = shortcutify(gen, *(resnet_taps(gen) if name == "cartoon" else vid2vid_taps(gen)), first, policy=AdaptiveKeyframes())
        cal = calibrate(sv, [x], keyframe_rate=1 / 3, progress=False)
        found[name] = cal.threshold
        print(f"{name}: threshold {cal.threshold:.4f} gives keyframe rate {cal.keyframe_rate:.3f} on bikes training frames", flush=True)
    middle = math.prod(found.values()) ** (1 / len(found))
    print(f"geometric middle: {middle:.4f} (shortcutify.core.policy.DEFAULT_THRESHOLD = {AdaptiveKeyframes().threshold})")
    write("keyframes_default", {"machine": machine(), "thresholds": found, "middle": middle})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--choose-default", action="store_true", help="only measure the default threshold (see choose_default)")
    parser.add_argument("--quick", action="store_true", help="tiny teacher, small frames, few steps (for CI)")
    parser.add_argument("--steps", type=int, default=None, help="distillation steps (default 600, quick 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="block seeds (default 0 1, quick 0)")
    parser.add_argument("--max-interval", type=int, default=AdaptiveKeyframes().max_interval)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.choose_default:
        choose_default(args.threads)
        return
    torch.set_num_threads(args.threads)
    t_start = time.time()
    name, size, car_size, crop = cartoon_preset(args.quick)
    steps = args.steps or (40 if args.quick else 600)
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    teacher, _ = load_teacher(name)
    train = read_split("bikes", "train", size)
    n_car = 24 if args.quick else 60
    videos = {
        "bikes 190-249": read_split("bikes", "heldout", size, max_frames=24 if args.quick else None),
        "carphone": read_video(sample_video("carphone_pristine"), size=car_size, max_frames=n_car),
    }
    with torch.no_grad():
        teacher_out = {k: torch.cat([output_image(teacher(v[i : i + 1])) for i in range(v.shape[0])]) for k, v in videos.items()}

    runs = []
    for seed in seeds:
        sv = distilled_block(teacher, name, train, crop, seed, steps, args.max_interval)
        policies = [(f"FixedInterval({a})", "fixed", 1 / a, FixedInterval(a)) for a in FIXED]
        policies += [(f"FixedInterval({a}) shifted {k}", "shifted", 1 / a, ShiftedInterval(a, k)) for a in FIXED for k in range(1, a)]
        for rate in ADAPTIVE_RATES:
            cal = calibrate(sv, [train], keyframe_rate=rate, policy=AdaptiveKeyframes(max_interval=args.max_interval), apply=False, progress=False)
            policies.append((f"adaptive, rate {rate:.3f} on training frames", "adaptive", cal.keyframe_rate, cal.policy))
        costs: dict[str, dict] = {}  # the path costs depend on whether the policy measures the change only
        for label, kind, train_rate, policy in policies:
            sv.policy = policy
            kind_cost = "fixed" if kind == "shifted" else kind
            if kind_cost not in costs:
                costs[kind_cost] = {k: (c.keyframe.macs, c.shortcut.macs) for k, c in ((k, sv.cost(v[:1])) for k, v in videos.items())}
            macs = costs[kind_cost]
            r = run_stream(sv, videos, teacher_out, macs)
            r.update(seed=seed, policy=label, kind=kind, train_rate=train_rate, settings=repr(policy))
            runs.append(r)
            print(f"[seed {seed}] {label:<36} rate {r['keyframe_rate']:.3f}  {r['macs'] / 1e9:.3f} GMACs  all-frame PSNR {r['psnr_all']:.2f} dB  "
                  f"worst bikes {r['bikes 190-249']['worst_shortcut_psnr']:.2f} dB", flush=True)
        teacher_macs = sv.cost(videos["bikes 190-249"][:1]).teacher.macs

    # means over seeds, per policy
    labels = list(dict.fromkeys(r["policy"] for r in runs))
    rows, summary = [], []
    for label in labels:
        rs = [r for r in runs if r["policy"] == label]

        def mean(f):
            return sum(f(r) for r in rs) / len(rs)

        def spread(f):
            return max(f(r) for r in rs) - min(f(r) for r in rs)

        s = {
            "policy": label, "kind": rs[0]["kind"], "seeds": len(rs),
            "train_rate": mean(lambda r: r["train_rate"]), "keyframe_rate": mean(lambda r: r["keyframe_rate"]),
            "gmacs": mean(lambda r: r["macs"]) / 1e9, "psnr_all": mean(lambda r: r["psnr_all"]),
            "psnr_all_spread": spread(lambda r: r["psnr_all"]),
            "bikes_mean": mean(lambda r: r["bikes 190-249"]["mean_shortcut_psnr"]),
            "bikes_worst": mean(lambda r: r["bikes 190-249"]["worst_shortcut_psnr"]),
            "carphone_mean": mean(lambda r: r["carphone"]["mean_shortcut_psnr"]),
            "carphone_worst": mean(lambda r: r["carphone"]["worst_shortcut_psnr"]),
        }
        summary.append(s)
        rows.append([label, f"{s['train_rate']:.3f}", f"{s['keyframe_rate']:.3f}", f"{s['gmacs']:.3f}", f"{s['psnr_all']:.2f} ± {s['psnr_all_spread'] / 2:.2f}",
                     f"{s['bikes_mean']:.2f}", f"{s['bikes_worst']:.2f}", f"{s['carphone_mean']:.2f}", f"{s['carphone_worst']:.2f}"])
    # each fixed interval averaged over its shifts (0 .. a-1): what a fixed schedule gives whatever its phase
    for a in FIXED:
        group = [x for x in summary if x["policy"] == f"FixedInterval({a})" or x["policy"].startswith(f"FixedInterval({a}) shifted")]
        if len(group) < 2:
            continue
        s = {k: sum(x[k] for x in group) / len(group) for k in ("train_rate", "keyframe_rate", "gmacs", "psnr_all", "psnr_all_spread",
                                                               "bikes_mean", "bikes_worst", "carphone_mean", "carphone_worst")}
        s.update(policy=f"FixedInterval({a}), mean of {len(group)} shifts", kind="fixed-mean", seeds=group[0]["seeds"])
        summary.append(s)
        rows.append([s["policy"], f"{s['train_rate']:.3f}", f"{s['keyframe_rate']:.3f}", f"{s['gmacs']:.3f}", f"{s['psnr_all']:.2f}",
                     f"{s['bikes_mean']:.2f}", f"{s['bikes_worst']:.2f}", f"{s['carphone_mean']:.2f}", f"{s['carphone_worst']:.2f}"])
    md = table(["policy", "keyframe rate (training)", "keyframe rate (held-out)", "GMACs/frame (measured)", "all-frame PSNR (dB)",
                "bikes shortcut mean", "bikes worst", "carphone shortcut mean", "carphone worst"], rows)
    print(md)
    print(f"teacher: {teacher_macs / 1e9:.3f} GMACs/frame on bikes; means over seeds {seeds} (± half the spread)")
    fixed3 = next(s for s in summary if s["policy"] == "FixedInterval(3)")
    adapt3 = next(s for s in summary if s["policy"] == f"adaptive, rate {1 / 3:.3f} on training frames")
    verdict = (f"calibrated to FixedInterval(3)'s rate on the training frames: held-out rate {adapt3['keyframe_rate']:.3f} "
               f"(fixed {fixed3['keyframe_rate']:.3f}), all-frame PSNR {adapt3['psnr_all']:.2f} dB (fixed {fixed3['psnr_all']:.2f}), "
               f"worst bikes shortcut frame {adapt3['bikes_worst']:.2f} dB (fixed {fixed3['bikes_worst']:.2f}: "
               f"{adapt3['bikes_worst'] - fixed3['bikes_worst']:+.2f} dB)")
    print(verdict)
    above = margins(summary)
    for label, x, m in above:
        print(f"adaptive curve vs {label} at {x:.3f} GMACs: " + ("outside the adaptive points' range" if m is None else f"{m:+.2f} dB"))
    verdict += "; adaptive curve above the fixed points by " + ", ".join(
        f"{label}: {'n/a' if m is None else f'{m:+.2f} dB'}" for label, x, m in above)
    shifted = margins(summary, "fixed-mean")
    if shifted:
        verdict += "; above the fixed intervals averaged over their shifts by " + ", ".join(
            f"{label.split(',')[0]}: {'n/a' if m is None else f'{m:+.2f} dB'}" for label, x, m in shifted)
    tag = "keyframes" + ("_quick" if args.quick else "")
    plot = _plot(runs, summary, RESULTS / f"{tag}.png")
    path = write(tag, {"machine": machine(), "version": __version__, "teacher": name, "steps": steps, "seeds": seeds, "max_interval": args.max_interval,
                       "block": {"resolution": sv.block.resolution, "width": sv.block.width},
                       "sizes": {"bikes": size, "carphone": car_size}, "summary": summary, "verdict": verdict,
                       "runs": [{k: v for k, v in r.items()} for r in runs], "markdown": md, "seconds": time.time() - t_start})
    print(f"wrote {path}" + (f" and {plot}" if plot else "") + f" in {time.time() - t_start:.0f} s")


def _plot(runs: list[dict], summary: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(10, 8))
    names = {"fixed": "FixedInterval(2..5)", "fixed-mean": "FixedInterval(2..5), mean over shifts", "adaptive": "AdaptiveKeyframes (calibrated)"}
    for kind, style in (("fixed", "s--"), ("fixed-mean", "d:"), ("adaptive", "o-")):
        pts = sorted((s["gmacs"], s["psnr_all"]) for s in summary if s["kind"] == kind)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=names[kind])
    ax.set_xlabel("GMACs per frame (measured, amortised)")
    ax.set_ylabel("all-frame PSNR vs teacher (dB)")
    ax.legend()
    seed = runs[0]["seed"]
    shown = [next(r for r in runs if r["policy"] == label and r["seed"] == seed)
             for label in ("FixedInterval(3)", f"adaptive, rate {1 / 3:.3f} on training frames")]
    low = min(f["psnr"] for r in shown for f in r["frames"] if not f["keyframe"])
    for k, (r, color) in enumerate(zip(shown, ("tab:blue", "tab:orange"))):
        ys = [float("nan") if f["keyframe"] else f["psnr"] for f in r["frames"]]
        bx.plot(ys, color=color, lw=1, label=r["policy"])
        keys = [i for i, f in enumerate(r["frames"]) if f["keyframe"]]
        bx.plot(keys, [low - 2 - 2 * k] * len(keys), "|", color=color, ms=10)
    bx.set_xlabel("frame of the held-out stream (bikes 190-249, then carphone); ticks: keyframes")
    bx.set_ylabel("shortcut-frame PSNR (dB)")
    bx.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
