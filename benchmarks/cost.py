"""Cost benchmark: MACs and parameters of every path (fvcore; one multiply-add = one MAC).

usage: python benchmarks/cost.py [--quick]

ResNet generator (ngf=64, 6 and 9 residual blocks, 256x256, the paper's taps) and the
vid2vid-style generator (ngf=64, 256x256); amortised per-frame cost for α ∈ {2, 3, 5, 8}.
--quick uses 64x64 frames (the ratios barely change; the absolute MACs scale with pixels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from shortcutify import shortcutify  # noqa: E402
from shortcutify.demo.models import ResnetGenerator, Vid2VidGenerator, resnet_taps, vid2vid_taps  # noqa: E402

ALPHAS = (2, 3, 5, 8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    s = 64 if args.quick else 256
    torch.manual_seed(0)
    cases = []
    for nb in (6, 9):
        g = ResnetGenerator(ngf=64, n_blocks=nb)
        cases.append((f"ResNet ngf=64, {nb} blocks", g, resnet_taps(g), (torch.zeros(1, 3, s, s),)))
    v = Vid2VidGenerator(label_nc=8, ngf=64, n_blocks=6)
    cases.append(("vid2vid-style ngf=64, 6 blocks", v, vid2vid_taps(v), (torch.zeros(1, 8, s, s), torch.zeros(1, 3, s, s))))
    rows, out = [], []
    for name, gen, taps, ex in cases:
        sv = shortcutify(gen, *taps, ex)
        c = sv.cost()
        rec = {"model": name, "taps": list(taps), "input": [list(x.shape) for x in ex], **c.as_dict()}
        rec["amortised"] = {a: c.amortised_macs(a) for a in ALPHAS}
        rec["block_width"] = sv.block.width
        out.append(rec)
        t = c.teacher.macs
        rows.append([name, f"{t / 1e9:.2f}", f"{c.keyframe.macs / 1e9:.2f}", f"{c.shortcut.macs / 1e9:.2f} (1/{t / c.shortcut.macs:.2f})",
                     f"{c.block.macs / 1e9:.2f}", f"{c.floor.macs / 1e9:.2f} (1/{t / c.floor.macs:.2f})"]
                    + [f"{c.amortised_macs(a) / 1e9:.2f} ({t / c.amortised_macs(a):.2f}x)" for a in ALPHAS]
                    + [f"{c.teacher.params / 1e6:.2f}M / {c.shortcut.params / 1e6:.3f}M ({c.teacher.params / c.shortcut.params:.1f}x) / {c.block.params / 1e6:.3f}M"])
    headers = ["model", "teacher GMACs", "keyframe", "shortcut", "block", "floor"] + [f"amortised α={a}" for a in ALPHAS] + ["params teacher / shortcut / block"]
    print(f"input {s}x{s}, fvcore MACs")
    print(table(headers, rows))
    path = write("cost_quick" if args.quick else "cost", {"machine": machine(), "size": s, "results": out, "markdown": table(headers, rows)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
