"""Mixed batches and compiled programs: dynamic batch dimension or padding to a fixed size?

usage: python benchmarks/mixed_batches.py [--quick] [--streams B] [--frames N]

With per-stream keyframes, a batch of B streams splits on some frames into a keyframe
sub-batch and a shortcut sub-batch of sizes k and B - k that change from frame to frame.
A program compiled for static shapes would recompile for every new size. This script
replays one random split sequence through ``torch.compile``d copies of a shortcut-style
program (the inference program of a wrapped ResNet generator) in three ways and reports
the number of compilations, the time spent compiling, and the steady-state time per frame:

* ``dynamic``: ``torch.compile(dynamic=None)``, torch's default: static first, then one
  recompile that marks the batch dimension dynamic;
* ``pad to B``: every sub-batch padded with zeros to B (one static graph; wasted rows);
* ``eager``: no compile (the reference).

It also times the export path's re-capture for a batch of 1 (export settles a batch of 1 apart: captured
once, then cached; since 0.23 the sizes from 2 up share one program with a symbolic batch where the
model allows, see benchmarks/capture.py). Writes results/mixed_batches*.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from shortcutify import FixedInterval, shortcutify  # noqa: E402
from shortcutify.demo.models import ResnetGenerator  # noqa: E402


def splits(streams: int, frames: int, seed: int) -> list[int]:
    """Sizes of the shortcut sub-batch, one per frame (keyframe rate about 1/3 per stream)."""
    g = torch.Generator().manual_seed(seed)
    return [int((torch.rand(streams, generator=g) > 1 / 3).sum()) for _ in range(frames)]


def sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


def run(fn, sizes: list[int], streams: int, frame: torch.Tensor, reference, pad: bool) -> tuple[list[float], list[float]]:
    """Per-frame seconds of the shortcut sub-batch (first calls of each new size kept apart)."""
    seen, first, steady = set(), [], []
    for n in sizes:
        if n == 0:
            continue
        rows = streams if pad else n
        x = frame[:1].expand(rows, *frame.shape[1:]).contiguous()
        ref = type(reference)(*(r[:1].expand(rows, *r.shape[1:]).contiguous() for r in reference))
        sync(x)
        t = time.perf_counter()
        with torch.no_grad():
            fn(x, shortcut_reference=ref)
        sync(x)
        (steady if rows in seen else first).append(time.perf_counter() - t)
        seen.add(rows)
    return first, steady


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=None, help="frame side in pixels")
    parser.add_argument("--ngf", type=int, default=None, help="the generator's base width")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = args.streams
    size, ngf, frames = (32, 8, 12) if args.quick else (96, 32, 40)
    frames, size, ngf = args.frames or frames, args.size or size, args.ngf or ngf
    gen = ResnetGenerator(ngf=ngf, n_blocks=4).to(args.device).eval()
    x = torch.randn(b, 3, size, size, device=args.device)
    sv = shortcutify(gen, "model.4", "model.16", x, policy=FixedInterval(3))
    with torch.no_grad():
        reference = sv.prepare_reference(sv.run_keyframe(x))
    sizes = splits(b, frames, seed=0)
    print(f"{b} streams, {frames} frames, {size}x{size}, ResNet ngf={ngf}, {args.device}; shortcut sub-batch sizes: {sizes}", flush=True)

    rows, results = [], {}
    for mode in ("eager", "dynamic", "pad to B"):
        torch._dynamo.reset()
        fn = sv.inference_program if mode == "eager" else torch.compile(sv.inference_program, dynamic=None)
        from torch._dynamo.utils import counters

        counters.clear()
        first, steady = run(fn, sizes, b, x, reference, pad=mode == "pad to B")
        compiles = int(counters["stats"].get("unique_graphs", 0))
        per = statistics.median(steady) if steady else float("nan")
        results[mode] = {"compiles": compiles, "first_calls_s": first, "steady_median_s": per}
        rows.append([mode, compiles, f"{sum(first):.1f}", f"{per * 1e3:.2f}"])
        print(f"{mode}: {compiles} compiled graphs, {sum(first):.1f} s in first calls, {per * 1e3:.2f} ms per steady call", flush=True)

    # the export path: a capture per new batch size (cached afterwards)
    sv_export = shortcutify(gen, "model.4", "model.16", x, policy=FixedInterval(3), capture="export")
    t = time.perf_counter()
    with torch.no_grad():
        sv_export.run_keyframe(x[:1])  # a new signature: captured again once
    sync(x)
    recapture = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        sv_export.run_keyframe(x[:1])
    sync(x)
    cached = time.perf_counter() - t
    md = table(["mode", "compiled graphs", "seconds in first calls of new sizes", "ms per steady call (median)"], rows)
    print(md)
    print(f"export path: first call at a new batch size {recapture:.2f} s (re-capture), then {cached * 1e3:.1f} ms")
    tag = "mixed_batches" + ("_quick" if args.quick else "") + ("_" + args.device.split(":")[0] if args.device != "cpu" else "")
    path = write(tag, {"machine": machine(args.device), "streams": b, "frames": frames, "size": size, "ngf": ngf, "sizes": sizes,
                       "results": results, "export_recapture_s": recapture, "export_cached_s": cached, "markdown": md})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
