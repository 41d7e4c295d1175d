"""Which capture path each third-party generator needs, and what capture costs.

usage: python benchmarks/capture.py [--quick] [--threads 2]

For each model of ``shortcutify.demo.third_party.MODELS`` (randomly initialised, 32x32
frames): whether ``torch.fx`` and ``torch.export`` capture it (and in how many seconds, graph
nodes; a graph that computes something else than the eager model counts as a failure), the path ``capture="auto"`` takes, the largest difference between keyframes and the
eager model, the shortcut path's MACs as a fraction of the teacher's, and the cost of a new
input signature: for an export-captured module the first frame of another shape captures
again (timed against a keyframe of a shape seen before). Needs the dev extra (diffusers, MONAI).
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

from shortcutify import UntraceableModelError, shortcutify  # noqa: E402
from shortcutify.core.capture import CaptureOptions, check_against_eager, export, trace  # noqa: E402
from shortcutify.demo.third_party import MODELS  # noqa: E402


def _try(fn):
    t = time.perf_counter()
    try:
        out = fn()
    except UntraceableModelError as exc:
        first = str(exc).splitlines()[0]
        return None, time.perf_counter() - t, first[first.find(":") + 2 :][:70]
    return out, time.perf_counter() - t, ""


@torch.no_grad()
def measure(name: str) -> dict:
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.build().eval()
    x = torch.randn(1, 3, 32, 32)
    def checked(graph):
        check_against_eager(graph, model, x)  # a graph that is not the model's program counts as a failure
        return graph

    fx_graph, fx_s, fx_why = _try(lambda: checked(trace(model, CaptureOptions(method="fx"))))
    ex_graph, ex_s, ex_why = _try(lambda: checked(export(model, x, CaptureOptions(method="export"))))
    t = time.perf_counter()
    sv = shortcutify(model, spec.enc, spec.dec, x)
    wrap_s = time.perf_counter() - t
    diff = (sv(x) - model(x)).abs().max().item()
    cost = sv.cost()
    y = torch.randn(2, 3, 48, 48)
    sv.reset()
    t = time.perf_counter()
    sv(y)  # a new signature: export captures again
    first = time.perf_counter() - t
    sv.reset()
    t = time.perf_counter()
    sv(y)
    again = time.perf_counter() - t
    sv.reset()
    t = time.perf_counter()
    sv(torch.randn(3, 3, 48, 48))  # another batch size of it: served by a program with a symbolic batch where export keeps one
    other_batch = time.perf_counter() - t
    return {
        "model": name,
        "fx": f"{len(fx_graph.gm.graph.nodes)} nodes, {fx_s:.2f} s" if fx_graph else f"fails: {fx_why}",
        "export": f"{len(ex_graph.gm.graph.nodes)} nodes, {ex_s:.2f} s" if ex_graph else f"fails: {ex_why}",
        "auto": sv.config.capture,
        "wrap_seconds": wrap_s,
        "keyframe_max_diff": diff,
        "shortcut_macs_fraction": cost.shortcut.macs / cost.teacher.macs,
        "new_shape_first_frame_seconds": first,
        "new_shape_later_keyframe_seconds": again,
        "new_shape_other_batch_seconds": other_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="two models only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    names = ["MONAI BasicUNet", "MONAI UNet"] if args.quick else list(MODELS)
    rows = [measure(n) for n in names]
    md = table(
        ["model", "torch.fx", "torch.export", "auto takes", "shortcutify() s", "keyframe max |diff|", "shortcut MACs / teacher",
         "first frame of a new shape s", "later keyframe of it s", "first frame of another batch size of it s"],
        [[r["model"], r["fx"], r["export"], r["auto"], f"{r['wrap_seconds']:.1f}", f"{r['keyframe_max_diff']:.1e}",
          f"{r['shortcut_macs_fraction']:.3f}", f"{r['new_shape_first_frame_seconds']:.2f}", f"{r['new_shape_later_keyframe_seconds']:.3f}",
          f"{r['new_shape_other_batch_seconds']:.3f}"]
         for r in rows],
    )
    print(f"third-party generators, 32x32 frames (new shape: 2x3x48x48), {args.threads} threads")
    print(md)
    path = write("capture" + ("_quick" if args.quick else ""), {"machine": machine(), "rows": rows, "markdown": md})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
