"""Automatic taps: what suggest_taps ranks first on the cartoon teacher, against the paper's taps.

usage: python benchmarks/taps.py [--quick] [--seeds 2] [--steps 300] [--extra ENC:DEC ...] [--threads 2] [--no-data-init]

The cartoon teacher (trained here; the paper's RecycleGAN-style ResNet generator) is ranked by
``suggest_taps`` on a 64x64 frame of bikes.mp4, twice: with the default frames (the example and
a copy moved 2 pixels) and with real frames (a clip of the training frames). Prints the top 5
of each with their scores. Full mode then distils the real-frames ranking's first choice and the
paper's taps (``resnet_taps``) the same short way (68x160 training frames, 64x64 crops,
``--steps`` steps, keyframe interval 3) for each seed, and compares PSNR against the teacher on
the shortcut frames of held-out video (bikes' held-out frames and carphone) and the shortcut
path's MACs; ``--extra`` distils more pairs the same way. Writes results/taps.json (``--quick``: ranking only, results/taps_quick.json).
``--no-data-init``: every block distilled from its reductions as built (``distill(data_init=False)``, as before
0.14) instead of ``distill``'s data-dependent start; writes results/taps_no-data-init.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from shortcutify import __version__, distill, evaluate, shortcutify, suggest_taps  # noqa: E402
from shortcutify.demo.models import resnet_taps  # noqa: E402
from shortcutify.demo.teachers import load_teacher, read_split  # noqa: E402
from shortcutify.demo.video import read_video, sample_video  # noqa: E402

RANK_SIZE = (64, 64)
TRAIN_SIZE, CAR_SIZE, CROP = (68, 160), (72, 88), 64


def ranking_rows(suggestions, paper: tuple[str, str]) -> list[list]:
    return [
        [i, s.enc_layer, s.dec_layer, "x".join(map(str, s.enc.shape[1:])), "x".join(map(str, s.dec.shape[1:])), s.width,
         f"{s.saved_fraction:.1%}", round(s.difficulty, 3), round(s.score, 3), "yes" if (s.enc_layer, s.dec_layer) == paper else ""]
        for i, s in enumerate(suggestions, 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="rank only (no distillation)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--extra", nargs="*", default=[], metavar="ENC:DEC", help="more pairs to distil the same way")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-data-init", action="store_true", help="distil from the reductions as built (data_init=False)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    teacher, _ = load_teacher("cartoon")
    paper = resnet_taps(teacher)
    clip = read_split("bikes", "train", RANK_SIZE, max_frames=24)
    example = clip[:1]

    rankings, seconds = {}, {}
    for label, frames in (("default frames", None), ("real frames", clip)):
        t = time.time()
        rankings[label] = suggest_taps(teacher, example, frames=frames, top=5)
        seconds[label] = time.time() - t
    headers = ["#", "enc_layer", "dec_layer", "enc CxHxW", "dec CxHxW", "width", "MACs saved", "difficulty", "score", "paper's taps"]
    md = []
    for label, sugg in rankings.items():
        md += [f"suggest_taps on a {RANK_SIZE[0]}x{RANK_SIZE[1]} frame, {label} ({seconds[label]:.1f} s):", "",
               table(headers, ranking_rows(sugg, paper)), ""]
    print("\n".join(md), flush=True)

    payload = {
        "machine": machine(), "version": __version__, "paper": list(paper), "rank_size": list(RANK_SIZE), "seconds": seconds, "score": "log-speedup",
        "rankings": {k: [{"enc": s.enc_layer, "dec": s.dec_layer, "saved_fraction": s.saved_fraction, "difficulty": s.difficulty,
                          "score": s.score, "width": s.width} for s in v] for k, v in rankings.items()},
    }
    if not args.quick:
        first = (rankings["real frames"][0].enc_layer, rankings["real frames"][0].dec_layer)
        train = read_split("bikes", "train", TRAIN_SIZE)
        clips = [train[i : i + 12] for i in range(0, train.shape[0], 12)]
        held = {
            "bikes": read_split("bikes", "heldout", TRAIN_SIZE, max_frames=36),
            "carphone": read_video(sample_video("carphone_pristine"), size=CAR_SIZE, max_frames=36),
        }
        candidates = {"first choice": first, "paper's taps": paper} if first != paper else {"first choice = paper's taps": paper}
        for pair in args.extra:
            enc, _, dec = pair.partition(":")
            candidates.setdefault(f"{enc} -> {dec}", (enc, dec))
        runs = []
        for label, (enc, dec) in candidates.items():
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sv = shortcutify(teacher, enc, dec, train[:1], interval=3)
                t = time.time()
                distill(sv, clips, steps=args.steps, batch_size=4, lr=2e-3, crop=CROP, flip=True, progress=False, seed=seed,
                        weights={"feature": 1.0, "alignment": 0.0}, data_init=not args.no_data_init)
                psnr = {v: evaluate(sv, [f[i : i + 12] for i in range(0, f.shape[0], 12)]).summary() for v, f in held.items()}
                cost = sv.cost()
                runs.append({"label": label, "enc": enc, "dec": dec, "seed": seed, "width": sv.block.width, "resolution": sv.block.resolution,
                             "shortcut_macs": cost.shortcut.macs, "teacher_macs": cost.teacher.macs, "seconds": time.time() - t,
                             "psnr": {v: r["psnr"] for v, r in psnr.items()}, "psnr_repeat": {v: r["psnr_repeat"] for v, r in psnr.items()}})
                print(f"{label} {enc} -> {dec}, seed {seed}: " + ", ".join(f"{v} {r['psnr']:.2f} dB" for v, r in psnr.items()), flush=True)
        rows = []
        for label, (enc, dec) in candidates.items():
            rs = [r for r in runs if r["label"] == label]
            cells = [label, enc, dec, rs[0]["width"], f"{rs[0]['shortcut_macs'] / 1e6:,.0f}", f"{rs[0]['shortcut_macs'] / rs[0]['teacher_macs']:.3f}"]
            for v in held:
                per = [r["psnr"][v] for r in rs]
                cells.append(" / ".join(f"{p:.2f}" for p in per) + f" (mean {sum(per) / len(per):.2f})")
            rows.append(cells)
        repeat = ", ".join(f"{v} {runs[0]['psnr_repeat'][v]:.2f} dB" for v in held)
        compare = table(["pair", "enc_layer", "dec_layer", "width", "shortcut MMACs (68x160)", "shortcut / teacher"]
                        + [f"{v} PSNR per seed (dB)" for v in held], rows)
        note = (f"{args.steps} distillation steps per seed (68x160 bikes training frames, 64x64 crops, α = 3); PSNR vs the "
                f"teacher on the shortcut frames of 36 held-out frames per video; repeating the keyframe: {repeat}.")
        print("\n" + compare + "\n" + note)
        md += [compare, "", note]
        payload.update({"steps": args.steps, "seeds": args.seeds, "data_init": not args.no_data_init, "runs": runs, "compare_markdown": compare, "note": note})
    payload["markdown"] = "\n".join(md)
    payload["total_seconds"] = time.time() - t_start
    path = write("taps" + ("_no-data-init" if args.no_data_init else "") + ("_quick" if args.quick else ""), payload)
    print(f"wrote {path} ({payload['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
