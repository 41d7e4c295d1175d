"""Where AdaBD's CPU gather path beats the reference: a grid of channels × map sizes.

usage: python benchmarks/cpu_gather.py [--quick] [--threads 2]

For each block width ``h`` (channels) and square feature map, ``adabd_conv_reference`` and
``adabd_conv_gather`` (``shortcutify/ops/gather.py``) run on the same random operands (batch 1,
3×3 kernel, offsets of about 2 px, inference), interleaved round by round; the table gives the
reference's median time over the gather's (above 1: the gather is faster). The thresholds in
``shortcutify/ops/gather.py`` (``MIN_CHANNELS``, ``MIN_PIXELS``) are read from this table;
the table marks the cells the dispatcher sends to the gather. ``--quick``: two cells, for CI.
Writes results/cpu_gather.json (``--quick``: cpu_gather_quick.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

from shortcutify.demo.timing import time_calls  # noqa: E402
from shortcutify.ops import adabd_conv_reference  # noqa: E402
from shortcutify.ops.gather import adabd_conv_gather, gather_pays  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    channels = (16, 32) if args.quick else (8, 16, 32, 64)
    sizes = (32,) if args.quick else (16, 32, 64, 96, 128)
    rows = []
    with torch.no_grad():
        for c in channels:
            for size in sizes:
                v = operands(c, size)
                t = time_calls({"reference": lambda: adabd_conv_reference(*v), "gather": lambda: adabd_conv_gather(*v)},
                               repeats=3 if args.quick else 9, warmup=1 if args.quick else 2)
                rows.append({"channels": c, "size": size, "reference_ms": t["reference"] * 1e3, "gather_ms": t["gather"] * 1e3,
                             "speedup": t["reference"] / t["gather"], "dispatched": gather_pays(v[1])})
                print(f"h={c:3d} {size:4d}x{size:<4d} reference {rows[-1]['reference_ms']:8.2f} ms  gather {rows[-1]['gather_ms']:8.2f} ms  "
                      f"{rows[-1]['speedup']:.2f}x{'  (dispatched to the gather)' if rows[-1]['dispatched'] else ''}")
    path = write("cpu_gather_quick" if args.quick else "cpu_gather", {"machine": machine(), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
