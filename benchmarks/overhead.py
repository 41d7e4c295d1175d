"""The stateful module's own Python time per call: ``sv(frame)`` with its programs replaced by cached outputs.

Usage: ``python benchmarks/overhead.py [--quick] [--calls N] [--tag NAME]``

On a GPU a small frame's shortcut program is launch-bound (a few milliseconds), so what the module
adds per call in Python (the input signature, the policy's decision, per-stream bookkeeping, the
keyframe check) is a share of every frame. This measures it alone: a tiny generator
(``ResnetGenerator(ngf=4, n_blocks=1)``, 8x8 frames) whose programs, after one real call, are
replaced on the module's runner by functions returning the cached outputs (sub-batches: their
first rows), so that each ``sv(x)`` call's time is the module's logic. Medians of per-call times,
split into whole-batch keyframe calls, shortcut calls and mixed calls (some streams keyframed:
batch 4 with one stream reset), for ``FixedInterval(3)`` and ``AdaptiveKeyframes(0.5)``; one thread,
CPU. Writes ``results/overhead.json``.

The runner's callables are patched on one instance, in this process only: a benchmark's means, not
something the library offers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from shortcutify import AdaptiveKeyframes, FixedInterval, shortcutify  # noqa: E402
from shortcutify.core.cut import REFERENCE_INPUT  # noqa: E402
from shortcutify.demo.models import ResnetGenerator, resnet_taps  # noqa: E402
from shortcutify.version import __version__  # noqa: E402


def _rows(tree: Any, n: int, batch: int) -> Any:
    """``tree`` with the tensors batched by stream cut to their first ``n`` rows (a sub-batch's outputs)."""
    if isinstance(tree, torch.Tensor):
        return tree if n == batch or tree.dim() == 0 or tree.shape[0] != batch else tree[:n]
    if isinstance(tree, tuple):
        parts = [_rows(t, n, batch) for t in tree]
        return type(tree)(*parts) if hasattr(tree, "_fields") else tuple(parts)
    return tree


def _cached(sv: Any, x: torch.Tensor) -> None:
    """Replace the programs of the module's runner for ``x`` by functions returning their outputs for ``x``."""
    batch = x.shape[0]
    runner = sv._runner((x,), {})
    key = sv.keyframe_program(x)
    ref = sv.block.prepare_reference(key[1], key[2])
    out = sv.inference_program(x, **{REFERENCE_INPUT: ref})

    def n(args: tuple) -> int:
        return args[0].shape[0]

    runner.keyframe = lambda a, k: _rows(key, n(a), batch)
    runner.reference = lambda e, d: _rows(ref, e.shape[0], batch)
    runner.inference = lambda a, k, r: _rows(out, n(a), batch)
    if getattr(sv.policy, "uses_change", False):
        head = runner.head((x,), {})
        runner.head = lambda a, k: _rows(head, n(a), batch)
        runner.inference_rest = lambda a, k, h, r: _rows(out, n(a), batch)
        runner.keyframe_rest = lambda a, k, h: _rows(key, n(a), batch)


def _calls(sv: Any, x: torch.Tensor, calls: int, stagger: bool) -> dict[str, float | int]:
    """Per-call times (µs, medians) of ``sv(x)``, split by what the call ran."""
    sv.reset()
    if stagger:  # one stream a frame behind the others: from then on some calls keyframe part of the batch
        sv(x)
        sv.reset(streams=[0])
    times: dict[str, list[float]] = {"keyframe": [], "shortcut": [], "mixed": []}
    for _ in range(calls):
        t = time.perf_counter_ns()
        sv(x)
        dt = (time.perf_counter_ns() - t) / 1e3
        keys = sv.last_keyframes
        times["keyframe" if bool(keys.all()) else "shortcut" if not bool(keys.any()) else "mixed"].append(dt)
    out: dict[str, float | int] = {}
    for kind, v in times.items():
        if v:
            out[f"{kind}_us"] = statistics.median(v)
            out[f"{kind}_calls"] = len(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls (CI)")
    ap.add_argument("--calls", type=int, default=None, help="calls per measurement (default 5000; --quick 300)")
    ap.add_argument("--tag", default="", help="a name for the run, in its result file's name (overhead_TAG.json)")
    args = ap.parse_args()
    calls = args.calls or (300 if args.quick else 5000)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows, records = [], []
    with torch.inference_mode():
        for policy_name, make in (("FixedInterval(3)", lambda: FixedInterval(3)), ("AdaptiveKeyframes(0.5)", lambda: AdaptiveKeyframes(0.5))):
            for batch, stagger in ((1, False), (4, False), (4, True)):
                torch.manual_seed(0)
                gen = ResnetGenerator(3, 3, ngf=4, n_blocks=1).eval()
                x = torch.randn(batch, 3, 8, 8)
                sv = shortcutify(gen, *resnet_taps(gen), x, policy=make())
                sv(x)
                _cached(sv, x)
                for _ in range(50):  # warm-up
                    sv(x)
                r = _calls(sv, x, calls, stagger)
                records.append({"policy": policy_name, "batch": batch, "staggered": stagger, **r})
                rows.append([
                    policy_name, batch, "one stream reset" if stagger else "-",
                    *(f"{r[k]:.1f}" if k in r else "-" for k in ("keyframe_us", "shortcut_us", "mixed_us")),
                ])
    md = table(["policy", "streams", "staggered", "keyframe call µs", "shortcut call µs", "mixed call µs"], rows)
    print(md)
    path = write("overhead" + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else ""), {
        "machine": machine(), "version": __version__, "tag": args.tag, "calls": calls, "threads": 1, "records": records, "markdown": md,
        "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
