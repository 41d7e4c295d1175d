"""Block ablation: quality of one block configuration after a short distillation, on held-out real video.

usage: python benchmarks/ablation.py [--resolution half|full|VARIANT] [--width W] [--steps 500] [--seed 0] [--data-init]
       python benchmarks/ablation.py --time-blocks

The cartoon teacher (trained here) at 136x320 (carphone 144x176), keyframe interval 3:
distils the block for --steps steps on the training frames of bikes.mp4 (the quality
benchmark's recipe, shorter) and reports PSNR/SSIM vs the teacher on the shortcut frames
of the held-out bikes frames and of carphone, next to repeating the keyframe. Writes
results/ablation_<resolution>_w<width>_s<seed>[_n<steps>][_di].json (no suffix for 500 steps);
the block starts as built (``distill(data_init=False)``, the start of 0.13 and earlier) unless
--data-init (the data-dependent start that ``distill`` makes by default since 0.14, of the decoder tap's
reduction alone since 0.15: the runs record the library version; suffix _di,
shown as its own rows);
report.py tabulates all of them, grouped by step count. VARIANT: a layout tried in
block_variants.py (not in the library).
--time-blocks times a shortcut frame and the block alone (CPU, 136x320, medians, the teacher
alongside) for every (layout, width) that has results, side by side in one process, and writes
results/ablation_speed.json (report.py adds the times to the table).
Used to compare block layouts and widths at equal training budget (one run: ~2.5 min on
2 cores); run several seeds before trusting a difference under ~0.5 dB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from block_variants import VARIANTS  # noqa: E402  (registers the tried layouts)
from common import machine, write  # noqa: E402

from shortcutify import __version__, distill, evaluate, shortcutify  # noqa: E402
from shortcutify.core.blocks import RESOLUTIONS  # noqa: E402
from shortcutify.demo.models import resnet_taps  # noqa: E402
from shortcutify.demo.teachers import load_teacher, read_split  # noqa: E402
from shortcutify.demo.video import read_video, sample_video  # noqa: E402


def time_blocks(threads: int) -> None:
    """Side-by-side CPU timings of the shortcut frame and the block for every ablated (layout, width)."""
    import json

    from common import RESULTS

    from shortcutify.demo.timing import path_calls, time_calls

    torch.set_num_threads(threads)
    configs = sorted({(r["resolution"], r["width"]) for r in map(json.loads, map(Path.read_text, RESULTS.glob("ablation_*_s*.json")))})
    teacher, _ = load_teacher("cartoon")
    x = read_split("bikes", "heldout", (136, 320), max_frames=1)
    calls = {}
    for res, width in configs:
        torch.manual_seed(0)
        sv = shortcutify(teacher, *resnet_taps(teacher), x, width=width, resolution=res).eval()
        paths = path_calls(sv, x)
        calls.setdefault("teacher", paths["teacher"])
        calls[f"{res} w{width} shortcut"], calls[f"{res} w{width} block"] = paths["shortcut"], paths["block"]
    with torch.no_grad():
        t = time_calls(calls, repeats=21, warmup=3)
    rows = [{"resolution": res, "width": width, "shortcut_ms": t[f"{res} w{width} shortcut"] * 1e3,
             "block_ms": t[f"{res} w{width} block"] * 1e3, "teacher_ms": t["teacher"] * 1e3} for res, width in configs]
    for r in rows:
        print(f"{r['resolution']:>18} w{r['width']:<3} shortcut {r['shortcut_ms']:7.2f} ms ({r['teacher_ms'] / r['shortcut_ms']:.2f}x the teacher), "
              f"block {r['block_ms']:6.2f} ms")
    print(f"wrote {write('ablation_speed', {'machine': machine(), 'size': [136, 320], 'rows': rows})}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-blocks", action="store_true", help="only time the ablated layouts side by side (see above)")
    parser.add_argument("--resolution", choices=RESOLUTIONS + tuple(v.resolution for v in VARIANTS), default="half")
    parser.add_argument("--width", type=int, default=None, help="block width (default: the automatic one)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-init", action="store_true", help="distill's data-dependent start (default: the block as built)")
    args = parser.parse_args()
    if args.time_blocks:
        time_blocks(args.threads)
        return
    torch.set_num_threads(args.threads)
    train = read_split("bikes", "train", (136, 320))
    videos = {
        "bikes (held-out frames)": read_split("bikes", "heldout", (136, 320), max_frames=60),
        "carphone (held-out video)": read_video(sample_video("carphone_pristine"), size=(144, 176), max_frames=60),
    }
    teacher, _ = load_teacher("cartoon")
    torch.manual_seed(args.seed)
    sv = shortcutify(teacher, *resnet_taps(teacher), train[:1], interval=3, width=args.width, resolution=args.resolution)
    t = time.time()
    distill(sv, [train[i : i + 12] for i in range(0, train.shape[0], 12)], steps=args.steps, batch_size=4, lr=2e-3,
            crop=128, flip=True, progress=False, weights={"feature": 1.0, "alignment": 0.0},
            data_init=args.data_init)
    seconds = time.time() - t
    rows = {}
    for name, v in videos.items():
        rows[name] = evaluate(sv, [v[i : i + 12] for i in range(0, v.shape[0], 12)]).summary()
        r = rows[name]
        print(f"{name}: PSNR {r['psnr']:.2f} dB (repeat {r['psnr_repeat']:.2f}), SSIM {r['ssim']:.4f}")
    tag = (f"ablation_{args.resolution}_w{sv.block.width}_s{args.seed}" + (f"_n{args.steps}" if args.steps != 500 else "")
           + ("_di" if args.data_init else ""))
    path = write(tag, {"machine": machine(), "resolution": args.resolution, "width": sv.block.width, "seed": args.seed,
                       "data_init": args.data_init, "version": __version__,
                       "steps": args.steps, "seconds": seconds, "block_macs": sv.cost().block.macs, "results": rows})
    print(f"wrote {path} ({seconds:.0f} s distillation)")


if __name__ == "__main__":
    main()
