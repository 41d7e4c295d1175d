"""Speed and memory benchmark: wall-clock per frame of teacher, keyframe, shortcut frame, amortised.

usage: python benchmarks/speed.py [--quick] [--threads 2] [--device cpu|cuda] [--resolution auto|half|full] [--width W]
                                 [--motion-prior] [--compare full full:32 full:32+prior full:32+local-reduced ...] [--processes 3] [--keep-memory]
                                 [--taps paper|suggested]

ResNet generator (ngf=64, 6 residual blocks, the paper's taps; ``--taps suggested``: the pair
``suggest_taps`` ranks first on a trained teacher, see ``common.suggested_taps``;
results/speed_cpu_taps-suggested.json) at 256x256 (--quick: 128x128).
All paths run in one process on the same input, interleaved round by round, after
warm-up; the median of the rounds is reported, as ratios to the teacher. On CUDA, CUDA
events with synchronisation. The block's own time is measured the same way. Peak memory:
the peak of tensor memory allocated while one path runs, above what was live before (CPU:
the CPU allocator's count of allocated bytes, as the profiler records it with each allocation
and free; CUDA: torch.cuda.max_memory_allocated). The shortcut
frame is also timed with the ops' fast paths off (``shortcut_reference``), side by side, and on CPU the
shortcut frame and the block with the block's inside in the plain layout (``channels_last_inside(False)``:
as before 0.19; ``shortcut_plain_layout``, ``block_plain_layout``).
``--compare LAYOUT[:WIDTH][+prior|+PRIOR] ...``: other blocks on the same generator, their shortcut frames and
blocks timed in the same rounds (this machine's speed drifts between runs by more than the
layouts differ: compare layouts within one run); ``+prior`` builds that block with the motion
prior (``motion_prior=True``), ``+PRIOR`` with the prior of that name (e.g. ``+local-reduced``). ``--motion-prior``: the measured block itself has the prior
(results/speed_cpu_motion-prior.json).

``--processes N`` (default 3, ``--quick`` 1): the whole measurement runs in N fresh processes, one
after the other, and the result is the process with the median shortcut-frame speed-up, with
every process's figures beside it: on this machine a process's times, and the teacher's more
than the shortcut frame's, depend on how glibc's malloc serves the large feature maps (mapping
fresh pages or reusing freed ones), which differs from process to process. ``--keep-memory``
runs them with malloc keeping freed memory (``KEEP_MEMORY_ENV``; results/speed_cpu_keep-memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import TAPS, in_fresh_processes, machine, table, write  # noqa: E402

from shortcutify import shortcutify  # noqa: E402
from shortcutify.core.blocks import channels_last_inside, prior_names  # noqa: E402
from shortcutify.demo.models import ResnetGenerator  # noqa: E402
from shortcutify.demo.timing import amortised, path_calls, time_calls  # noqa: E402
from shortcutify.ops import use_fast_path  # noqa: E402

PATHS = ("teacher", "keyframe", "shortcut", "block")


def build(size: int, device: str, resolution: str = "auto", width: int | None = None, taps: str = "paper",
          motion_prior: bool | str = False):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=64, n_blocks=6).to(device)
    x = torch.randn(1, 3, size, size, device=device)
    sv = shortcutify(gen, *TAPS[taps](gen), x, resolution=resolution, width=width, motion_prior=motion_prior)
    return sv, x


def layout_spec(text: str) -> tuple[str, int | None, bool | str]:
    """``"full"``, ``"full:32"``, ``"full:32+prior"``, ``"full:32+local-reduced"`` -> ``("full", None, False)``,
    ``("full", 32, False)``, ``("full", 32, True)``, ``("full", 32, "local-reduced")`` (a prior by its name,
    one of ``prior_names()``)."""
    spec, plus, extra = text.partition("+")
    res, _, width = spec.partition(":")
    if res not in ("half", "full") or (width and not width.isdigit()) or (plus and extra != "prior" and extra not in prior_names()):
        raise argparse.ArgumentTypeError(
            f"expected LAYOUT[:WIDTH][+prior|+PRIOR] with LAYOUT half or full and PRIOR one of {prior_names()}, got {text!r}")
    return res, int(width) if width else None, (True if extra == "prior" else extra) if plus else False


def label(resolution: str, width: int, motion_prior: str | None = None) -> str:
    """A block's name in the tables: ``", motion prior"`` for the default prior (``"local"``), else with its name."""
    prior = "" if not motion_prior else ", motion prior" if motion_prior == "local" else f", motion prior {motion_prior}"
    return f"{resolution}, width {width}" + prior


@torch.no_grad()
def timings(sv, x, repeats: int, warmup: int, device: str, others: tuple = ()) -> dict[str, float]:
    """Median seconds of each path, interleaved; ``shortcut_reference``: the shortcut frame with
    the ops' fast paths off (``use_fast_path(False)``: plain PyTorch throughout); on CPU
    ``shortcut_plain_layout`` and ``block_plain_layout``: the shortcut frame and the block with the block's
    inside in the plain layout (``channels_last_inside(False)``, as before 0.19); for every module of
    ``others`` (the same generator, other blocks), ``shortcut@<label>`` and ``block@<label>``."""
    calls = path_calls(sv, x)
    shortcut = calls["shortcut"]

    def shortcut_reference() -> None:
        with use_fast_path(False):
            shortcut()

    calls["shortcut_reference"] = shortcut_reference
    if device == "cpu":  # the blocks' inside in the plain layout (as before 0.19), the rest as it is
        block = calls["block"]

        def shortcut_plain_layout() -> None:
            with channels_last_inside(False):
                shortcut()

        def block_plain_layout() -> None:
            with channels_last_inside(False):
                block()

        calls["shortcut_plain_layout"], calls["block_plain_layout"] = shortcut_plain_layout, block_plain_layout
    for other in others:
        paths = path_calls(other, x)
        tag = label(other.block.resolution, other.block.width, other.block.motion_prior)
        calls[f"shortcut@{tag}"], calls[f"block@{tag}"] = paths["shortcut"], paths["block"]
    return time_calls(calls, repeats=repeats, warmup=warmup, cuda=device.startswith("cuda"))


@torch.no_grad()
def cuda_memory(sv, x) -> dict[str, float]:
    out = {}
    for k, fn in path_calls(sv, x).items():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        out[k] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


@torch.no_grad()
def cpu_memory(sv, x) -> dict[str, float]:
    """Peak of live tensor memory while one path runs (MiB above what was live before), CPU.

    From the CPU allocator's own count of allocated bytes, which torch's profiler records
    (``profile_memory``) with every allocation and free as a ``[memory]`` event ("Total
    Allocated" in its trace): the highest count during the path minus the count before it.
    (Before 0.12 this summed the ops' self memory in the order the ops started; an op's self
    memory nets the frees of its own temporaries and was counted at its start, so ops with
    large temporaries, such as AdaBD's, were undercounted.)
    """
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    out = {}
    for k, fn in path_calls(sv, x).items():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(trace))
            events = [e["args"] for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
        events = [e for e in events if str(e.get("Device Type", 0)) in ("0", "cpu", "CPU")]
        if not events:
            raise RuntimeError(f"the profiler recorded no CPU memory events while the {k} path ran: cannot measure its memory")
        before = events[0]["Total Allocated"] - events[0]["Bytes"]
        out[k] = (max(e["Total Allocated"] for e in events) - before) / 2**20
    return out


@torch.no_grad()
def block_ops(sv, x, rounds: int = 5, top: int = 6) -> list[dict[str, float]]:
    """Where the block's time goes: the ops with the most self CPU time over ``rounds`` calls (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    block = path_calls(sv, x)["block"]
    block()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            block()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "ms_per_call": e.self_cpu_time_total / rounds / 1e3} for e in events[:top]]


KEEP_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def measure(args: argparse.Namespace) -> dict:
    """One complete measurement in this process: prints its tables and returns the result."""
    torch.set_num_threads(args.threads)
    size = args.size or (128 if args.quick else 256)
    repeats = args.repeats or (5 if args.quick else 15)
    sv, x = build(size, args.device, args.resolution, args.width, args.taps, args.motion_prior)
    others = [shortcutify(sv.teacher, *TAPS[args.taps](sv.teacher), x, resolution=r, width=w, motion_prior=p) for r, w, p in args.compare]
    t = timings(sv, x, repeats, warmup=2 if args.quick else 3, device=args.device, others=tuple(others))
    a = sv.policy.interval
    t["amortised"] = amortised(t["keyframe"], t["shortcut"], a)
    mem = cuda_memory(sv, x) if args.device.startswith("cuda") else cpu_memory(sv, x)
    ops = block_ops(sv, x) if args.device == "cpu" else []
    rows = [[k, f"{t[k] * 1e3:.1f}", f"{t['teacher'] / t[k]:.2f}x", f"{mem[k]:.0f}" if k in mem else "-"] for k in ("teacher", "keyframe", "shortcut", "amortised", "block")]
    share = t["block"] / t["shortcut"]
    md = table(["path", "ms per frame (median)", "speed-up vs teacher", "peak tensor memory (MiB)"], rows)
    print(f"ResNet ngf=64, 6 blocks, {size}x{size}, taps {sv.config.enc_layer} -> {sv.config.dec_layer} ({args.taps}), "
          f"{args.device}, {args.threads} threads, {repeats} rounds")
    print(md)
    print(f"block share of a shortcut frame: {share:.1%}; amortised at α={a}")
    print(f"shortcut frame with the ops' fast paths off (plain PyTorch): {t['shortcut_reference'] * 1e3:.1f} ms, "
          f"{t['teacher'] / t['shortcut_reference']:.2f}x the teacher (fast paths: {t['shortcut_reference'] / t['shortcut']:.2f}x)")
    if "block_plain_layout" in t:
        print(f"block's inside in the plain layout (channels_last_inside(False), as before 0.19): block {t['block_plain_layout'] * 1e3:.1f} ms, "
              f"shortcut frame {t['shortcut_plain_layout'] * 1e3:.1f} ms (the channels-last inside takes {t['block'] / t['block_plain_layout']:.2f}x "
              f"and {t['shortcut'] / t['shortcut_plain_layout']:.2f}x that time)")
    if ops:
        print("block's time by op (profiler, self CPU time): " + ", ".join(f"{o['op']} {o['share']:.0%}" for o in ops))
    compared = {}
    for other in others:
        tag = label(other.block.resolution, other.block.width, other.block.motion_prior)
        compared[tag] = {"resolution": other.block.resolution, "width": other.block.width, "motion_prior": other.block.motion_prior,
                         "shortcut": t[f"shortcut@{tag}"], "block": t[f"block@{tag}"]}
        print(f"side by side, {tag}: shortcut frame {t[f'shortcut@{tag}'] * 1e3:.1f} ms "
              f"({t[f'shortcut@{tag}'] / t['shortcut']:.2f}x this run's {label(sv.block.resolution, sv.block.width, sv.block.motion_prior)}), "
              f"block {t[f'block@{tag}'] * 1e3:.1f} ms (share {t[f'block@{tag}'] / t[f'shortcut@{tag}']:.1%}), "
              f"{t['teacher'] / t[f'shortcut@{tag}']:.2f}x faster than the teacher")
    return {"machine": machine(args.device), "size": size, "repeats": repeats, "seconds": t, "memory_mib": mem,
            "memory_method": "cuda" if args.device.startswith("cuda") else "allocator",
            "block_share": share, "interval": a, "markdown": md, "block_ops": ops,
            "block_width": sv.block.width, "resolution": sv.block.resolution, "requested": args.resolution,
            "motion_prior": sv.block.motion_prior,
            "taps": args.taps, "tap_pair": [sv.config.enc_layer, sv.config.dec_layer],
            "compared": compared,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}


def in_processes(args: argparse.Namespace, argv: list[str]) -> dict:
    """``args.processes`` measurements, each in a fresh Python process (one after the other); the
    result of the process with the median shortcut-frame speed-up, and every process's figures."""
    runs = in_fresh_processes(__file__, argv, args.processes, KEEP_MEMORY_ENV if args.keep_memory else None)
    ratios = [r["seconds"]["teacher"] / r["seconds"]["shortcut"] for r in runs]
    median = sorted(range(len(runs)), key=lambda i: ratios[i])[(len(runs) - 1) // 2]
    result = dict(runs[median])
    result["processes"] = [{k: r[k] for k in ("seconds", "memory_mib", "block_share", "compared")} for r in runs]
    result["median_process"] = median
    print(f"shortcut frame speed-up per process: {', '.join(f'{x:.2f}x' for x in ratios)}; "
          f"the result is process {median + 1}'s (the median)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--resolution", choices=("auto", "half", "full"), default="auto", help="the block layout (default: the library's, auto)")
    parser.add_argument("--width", type=int, default=None, help="the block's width (default: automatic)")
    parser.add_argument("--taps", choices=sorted(TAPS), default="paper", help="the tap pair (default: the paper's)")
    parser.add_argument("--motion-prior", action="store_true", help="build the measured block with the motion prior")
    parser.add_argument("--compare", nargs="+", type=layout_spec, default=[], metavar="LAYOUT[:WIDTH][+prior|+PRIOR]",
                        help="other blocks (layout, optional width, optional motion prior) timed in the same rounds")
    parser.add_argument("--processes", type=int, default=None,
                        help="measure in this many fresh processes and keep the median one (default 3; --quick: 1): "
                             "CPU times, and their ratios, differ between processes on this machine")
    parser.add_argument("--keep-memory", action="store_true",
                        help="run the processes with glibc's malloc keeping freed memory (no mmap, no trimming: "
                             f"{' '.join(f'{k}={v}' for k, v in KEEP_MEMORY_ENV.items())})")
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)  # one process's result (internal)
    argv = sys.argv[1:]
    args = parser.parse_args()
    processes = args.processes or (1 if args.quick else 3)
    if processes < 1:
        parser.error(f"--processes must be at least 1, got {processes}")
    if args.out is not None:
        args.out.write_text(json.dumps(measure(args)))
        return
    if processes == 1 and not args.keep_memory:
        result = measure(args)
    else:
        args.processes = processes
        result = in_processes(args, [a for a in argv if a != "--keep-memory"])
    name = (f"speed_{args.device}" + ("" if args.resolution == "auto" else f"_{args.resolution}")
            + ("" if args.width is None else f"_w{args.width}") + ("" if args.taps == "paper" else f"_taps-{args.taps}") + ("_motion-prior" if args.motion_prior else "")
            + ("_keep-memory" if args.keep_memory else "")
            + ("_quick" if args.quick else ""))
    path = write(name, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
