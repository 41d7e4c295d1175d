"""Where AdaBD's CPU gather path beats the reference: a grid of channels × map sizes.

usage: python benchmarks/cpu_gather.py [--quick] [--threads 2] [--processes 3] [--chunks | --warp | --pointwise]

For each block width ``h`` (channels) and square feature map, ``adabd_conv_reference`` and
``adabd_conv_gather`` (``shortcutify/ops/gather.py``) run on the same random operands (batch 1,
3×3 kernel, offsets of about 2 px, inference), the reference's in contiguous memory and, since 0.19, the
gather's in channels-last memory (as the full block gives them where the gather applies: its product
then writes channel rows) and in contiguous memory, interleaved round by round; the tables give the
reference's median time over the gather's (above 1: the gather is faster). The thresholds in
``shortcutify/ops/gather.py`` (``ROWS_MIN_CHANNELS``, ``ROWS_MIN_VALUES`` for channels-last features;
``MIN_CHANNELS``, ``MIN_PIXELS`` for contiguous ones) are read from these tables, which mark the cells
the dispatcher sends to the gather. The grid runs in ``--processes``
fresh processes (default 3) and each cell is the median over them (speed.py's docstring says why
one process is one sample). ``--quick``: two cells, one process, for CI.
Writes results/cpu_gather.json (``--quick``: cpu_gather_quick.json).

``--warp``: the same grid for the warp (``warp_reference``, one ``grid_sample``, against
``warp_gather``, one bag of four rows per output pixel) on channels-last maps with a flow of about
2 px, with the full layout's 192-channel reference stack added; the table marks the cells
``warp`` sends to the gather (``MIN_CHANNELS`` and ``MIN_WARP_ELEMENTS``, chosen from this table). Writes results/cpu_gather_warp.json.

``--chunks``: the gather's chunk budget instead (``CHUNK_BYTES``: the bytes of columns it gathers
per chunk of output rows, which bound its working set): width 32 and 9 taps on square maps of
64, 128 and 256 (the decoder tap of the speed model's default block at 256², 512² and 1024²
frames), each budget timed against no chunking, interleaved (see ``chunk_rows``: the allocator's
reuse of freed memory makes a call's time depend on the calls just before it). Writes results/cpu_gather_chunks.json.

``--pointwise``: the full block's reconstruction on CPU (``shortcutify/ops/pointwise.py``): a 1×1 conv
from 32 channels of channels-last rows plus a channels-last residual (a channel slice of a wider map,
as the warped decoder tap is), summed into contiguous memory. The plain sum
(``(conv2d(x) + residual).contiguous()``) against ``pointwise_conv_add`` at several
``PIXELS_PER_CHUNK``, on 64, 128 and 256 channels × square maps of 32 to 256, interleaved as
``--chunks`` does; the table gives the plain sum's median time over the op's (above 1: the op is
faster) and marks the maps large enough for ``pointwise_conv_add`` to take its chunked path
(``MIN_PIXELS``, chosen from this table; here it is timed on every map). Writes results/cpu_gather_pointwise.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import in_fresh_processes, machine, write  # noqa: E402

from shortcutify.demo.timing import time_calls  # noqa: E402
from shortcutify.ops import adabd_conv_reference, warp_reference  # noqa: E402
import shortcutify.ops.gather as gather  # noqa: E402
from shortcutify.ops.gather import adabd_conv_gather, gather_pays, warp_gather, warp_gather_serves  # noqa: E402
import shortcutify.ops.pointwise as pointwise  # noqa: E402

CHUNK_BUDGETS = {"2 MiB": 2**21, "8 MiB": 2**23, "32 MiB": 2**25, "none": None}
CALLS_IN_A_ROW = 3
PASSES = 3  # the whole measurement, repeated in this process (its passes agree; separate runs have not)


def operands(c: int, size: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(1, c, size, size, generator=gen),  # f_ref
        torch.randn(1, c, size, size, generator=gen),  # a
        torch.randn(1, 18, size, size, generator=gen) * 2,  # offset
        torch.rand(1, 9, size, size, generator=gen),  # mask
        torch.randn(c, c, 3, 3, generator=gen) / (9 * c) ** 0.5,  # weight
        torch.randn(c, generator=gen),  # bias
    ]


def chunk_rows(quick: bool) -> list[dict]:
    """Time the gather at each chunk budget (``None``: all rows at once) against no chunking.

    Per round, each budget runs :data:`CALLS_IN_A_ROW` calls and only the last ones are timed
    (the allocator reuses freed memory by size: a call's time depends on the sizes freed just
    before it), and the budgets' order rotates from round to round; the median over rounds, in
    each of :data:`PASSES` passes.
    """
    rows = []
    default = gather.CHUNK_BYTES
    c = 32
    names = list(CHUNK_BUDGETS)
    for size in (64,) if quick else (64, 128, 256):
        v = operands(c, size)
        columns = 9 * c * size * size * 4
        passes = []
        try:
            for _ in range(1 if quick else PASSES):
                samples: dict[str, list[float]] = {k: [] for k in names}
                for r in range(4 if quick else 2 + 3 * len(names)):
                    for k in names[r % len(names):] + names[: r % len(names)]:
                        gather.CHUNK_BYTES = CHUNK_BUDGETS[k] or columns
                        adabd_conv_gather(*v)
                        t0 = time.perf_counter()
                        for _ in range(CALLS_IN_A_ROW - 1):
                            adabd_conv_gather(*v)
                        if r >= 2:  # two rounds of warm-up
                            samples[k].append((time.perf_counter() - t0) / (CALLS_IN_A_ROW - 1))
                passes.append({k: statistics.median(x) for k, x in samples.items()})
        finally:
            gather.CHUNK_BYTES = default
        for k, b in CHUNK_BUDGETS.items():
            ratios = [t[k] / t["none"] for t in passes]
            rows.append({"channels": c, "size": size, "budget": k, "columns_mib": columns / 2**20,
                         "chunk_mib": min(columns, b or columns) / 2**20, "ms": [t[k] * 1e3 for t in passes],
                         "vs_none": statistics.median(ratios), "vs_none_passes": ratios, "default": b == default})
            print(f"h={c} {size}x{size} budget {k:>6}: " + ", ".join(f"{t[k] * 1e3:.2f} ms" for t in passes)
                  + f" ({' / '.join(f'{x:.2f}' for x in ratios)}x no chunking){'  (the default)' if b == default else ''}")
    return rows


POINTWISE_CHUNKS = (256, 512, 1024, 2048, 4096)


def pointwise_rows(quick: bool) -> list[dict]:
    """Time ``pointwise_conv_add`` at each of :data:`POINTWISE_CHUNKS` pixels per chunk against the plain
    sum, interleaved with a rotating order and :data:`CALLS_IN_A_ROW` calls per turn (as :func:`chunk_rows`)."""
    rows = []
    default, threshold = pointwise.PIXELS_PER_CHUNK, pointwise.MIN_PIXELS
    gen = torch.Generator().manual_seed(0)
    names = ["plain", *map(str, POINTWISE_CHUNKS)]
    cells = [(128, 64)] if quick else [(c, size) for c in (64, 128, 256) for size in (32, 64, 128, 256)]
    for cout, size in cells:
        x = torch.randn(1, 32, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
        residual = torch.randn(1, cout + 64, size, size, generator=gen).contiguous(memory_format=torch.channels_last)[:, 64:]
        weight, bias = torch.randn(cout, 32, 1, 1, generator=gen) / 32**0.5, torch.randn(cout, generator=gen)
        calls = {"plain": lambda: (torch.nn.functional.conv2d(x, weight, bias) + residual).contiguous()}
        calls.update({k: lambda: pointwise.pointwise_conv_add(x, weight, bias, residual) for k in names[1:]})
        passes = []
        pointwise.MIN_PIXELS = 1  # the op's chunked path on every map: the table says where it pays
        try:
            for _ in range(1 if quick else PASSES):
                samples: dict[str, list[float]] = {k: [] for k in names}
                for r in range(4 if quick else 2 + 2 * len(names)):
                    for k in names[r % len(names):] + names[: r % len(names)]:
                        pointwise.PIXELS_PER_CHUNK = int(k) if k != "plain" else default
                        calls[k]()
                        t0 = time.perf_counter()
                        for _ in range(CALLS_IN_A_ROW - 1):
                            calls[k]()
                        if r >= 2:
                            samples[k].append((time.perf_counter() - t0) / (CALLS_IN_A_ROW - 1))
                passes.append({k: statistics.median(v) for k, v in samples.items()})
        finally:
            pointwise.PIXELS_PER_CHUNK, pointwise.MIN_PIXELS = default, threshold
        for k in names[1:]:
            ratios = [t["plain"] / t[k] for t in passes]
            rows.append({"channels": cout, "size": size, "chunk": int(k), "plain_ms": [t["plain"] * 1e3 for t in passes],
                         "ms": [t[k] * 1e3 for t in passes], "speedup": statistics.median(ratios), "speedup_passes": ratios,
                         "default": int(k) == default, "dispatched": size * size >= threshold})
            print(f"Cout={cout:3d} {size:3d}x{size:<3d} chunk {k:>4}: " + ", ".join(f"{t[k] * 1e3:.2f} ms" for t in passes)
                  + " (plain " + " / ".join(f"{t['plain'] * 1e3:.2f}" for t in passes) + " ms: " + " / ".join(f"{v:.2f}" for v in ratios) + "x)"
                  + ("  (the default)" if int(k) == default else "") + ("" if size * size >= threshold else "  (below MIN_PIXELS: the plain sum runs)"))
    return rows


def warp_operands(c: int, size: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    return [x, torch.randn(1, 2, size, size, generator=gen) * 2]


def rows_operands(v: list[torch.Tensor]) -> list[torch.Tensor]:
    """AdaBD's operands as the full block gives them to the gather since 0.19 (its inside in channels-last
    memory where the gather applies: both features, the offsets and the mask channels-last)."""
    return [t.contiguous(memory_format=torch.channels_last) if i < 4 else t for i, t in enumerate(v)]


def grid(quick: bool, warp: bool = False) -> list[dict]:
    """The gather against the reference over channels × map sizes, in this process (``warp``: the warp's)."""
    channels = ((16, 32) if quick else (8, 16, 32, 64)) + ((192,) if warp and not quick else ())
    sizes = (32,) if quick else (16, 32, 64, 96, 128, 256)
    reference, fast, make = (warp_reference, warp_gather, warp_operands) if warp else (adabd_conv_reference, adabd_conv_gather, operands)
    rows = []
    with torch.no_grad():
        for c in channels:
            for size in sizes:
                v = make(c, size)
                w = v if warp else rows_operands(v)  # the gather's operands as the full block gives them; the reference's plain
                calls = {"reference": lambda: reference(*v), "gather": lambda: fast(*w)}
                if not warp:  # the gather on contiguous operands too (where the half block and direct calls use it)
                    calls["gather_planar"] = lambda: fast(*v)
                t = time_calls(calls, repeats=3 if quick else 9, warmup=1 if quick else 2)
                rows.append({"channels": c, "size": size, "reference_ms": t["reference"] * 1e3, "gather_ms": t["gather"] * 1e3,
                             "speedup": t["reference"] / t["gather"], "dispatched": warp_gather_serves(*v) if warp else gather_pays(w[1])})
                if not warp:
                    rows[-1].update(speedup_planar=t["reference"] / t["gather_planar"], dispatched_planar=gather_pays(v[1]))
                print(f"h={c:3d} {size:4d}x{size:<4d} reference {rows[-1]['reference_ms']:8.2f} ms  gather {rows[-1]['gather_ms']:8.2f} ms  "
                      f"{rows[-1]['speedup']:.2f}x{'  (dispatched to the gather)' if rows[-1]['dispatched'] else ''}"
                      + ("" if warp else f"; on contiguous operands {rows[-1]['speedup_planar']:.2f}x"
                         + ("  (dispatched)" if rows[-1]["dispatched_planar"] else "")))
    return rows


def combined(runs: list[list[dict]]) -> list[dict]:
    """Per cell: the median speed-up over the processes, and every process's."""
    out = []
    for cells in zip(*runs):
        speedups = [c["speedup"] for c in cells]
        if "speedup_planar" in cells[0]:
            planar = [c["speedup_planar"] for c in cells]
            cells = ({**cells[0], "speedup_planar": statistics.median(planar), "speedups_planar": planar}, *cells[1:])
        out.append({**cells[0], "speedup": statistics.median(speedups), "speedups": speedups,
                    "reference_ms": statistics.median(c["reference_ms"] for c in cells),
                    "gather_ms": statistics.median(c["gather_ms"] for c in cells)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", action="store_true", help="time the gather's chunk budgets instead")
    parser.add_argument("--warp", action="store_true", help="the grid for the warp instead of AdaBD")
    parser.add_argument("--pointwise", action="store_true", help="time the full block's reconstruction (pointwise_conv_add) instead")
    parser.add_argument("--processes", type=int, default=None,
                        help="the grid in this many fresh processes, the median per cell (default 3; --quick: 1)")
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)  # one process's grid (internal)
    argv = sys.argv[1:]
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.chunks + args.warp + args.pointwise > 1:
        parser.error("--chunks, --warp and --pointwise are separate measurements: give one")
    if args.pointwise:
        with torch.no_grad():
            rows = pointwise_rows(args.quick)
        print(f"wrote {write('cpu_gather_pointwise_quick' if args.quick else 'cpu_gather_pointwise', {'machine': machine(), 'rows': rows})}")
        return
    if args.chunks:
        with torch.no_grad():
            rows = chunk_rows(args.quick)
        print(f"wrote {write('cpu_gather_chunks_quick' if args.quick else 'cpu_gather_chunks', {'machine': machine(), 'rows': rows})}")
        return
    if args.out is not None:
        args.out.write_text(json.dumps(grid(args.quick, args.warp)))
        return
    processes = args.processes or (1 if args.quick else 3)
    if processes < 1:
        parser.error(f"--processes must be at least 1, got {processes}")
    rows = grid(args.quick, args.warp) if processes == 1 else combined(in_fresh_processes(__file__, argv, processes))
    if processes > 1:
        for r in rows:
            print(f"h={r['channels']:3d} {r['size']:4d}x{r['size']:<4d} median {r['speedup']:.2f}x over processes "
                  f"({', '.join(f'{x:.2f}' for x in r['speedups'])}){'  (dispatched)' if r['dispatched'] else ''}")
    name = "cpu_gather" + ("_warp" if args.warp else "")
    path = write(name + ("_quick" if args.quick else ""), {"machine": machine(), "rows": rows, "processes": processes})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
