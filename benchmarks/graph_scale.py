"""How list_taps, suggest_taps and shortcutify scale with the size of the generator's graph.

usage: python benchmarks/graph_scale.py [--quick] [--threads 2] [--depths 25 100 300] [--tag NAME]

Generators: a residual network of ``depth`` pre-activation blocks (GroupNorm, SiLU, two 3x3 convs, a sum:
six graph nodes each) between a stride-2 conv and a transposed conv, 16 channels, one 16x16 frame; and,
where diffusers is installed, a ``UNet2DModel`` of diffusers' default layout (four down and four up blocks,
two layers per block, attention in the inner ones) with narrow channels, on a 32x32 frame, captured by
export. For each: the graph's nodes, and the seconds of ``list_taps``, ``suggest_taps(top=1)`` (which
builds and runs the cut of every candidate pair) and ``shortcutify`` with given taps, one call each, and
the seconds of counting the MACs up to every node in one pass (``shortcutify.core.taps.macs_up_to``) against
a walk over each node's ancestors, side by side (skipped on versions without it). ``--quick``: the two
smallest depths, no diffusers. Writes results/graph_scale.json (``--quick``: graph_scale_quick.json;
``--tag``: graph_scale_TAG.json).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from shortcutify import __version__, list_taps, shortcutify, suggest_taps  # noqa: E402
from shortcutify.core.capture import CaptureOptions, capture  # noqa: E402
from shortcutify.core.taps import ancestors  # noqa: E402


class PreActBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.conv1, self.conv2 = nn.GroupNorm(4, c), nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(nn.functional.silu(self.norm(x)))))


class DeepResNet(nn.Module):
    """``[B, 3, H, W] -> [B, 3, H, W]`` through ``depth`` residual blocks at half resolution."""

    def __init__(self, depth: int, c: int = 16) -> None:
        super().__init__()
        self.head, self.down = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.body = nn.Sequential(*[PreActBlock(c) for _ in range(depth)])
        self.up, self.tail = nn.ConvTranspose2d(c, c, 2, stride=2), nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.up(self.body(self.down(self.head(x)))))


def diffusers_unet() -> tuple[nn.Module, str, str] | None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    from shortcutify.demo.third_party import UNetFrame

    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 16, 32, 32), norm_num_groups=4)
    return UNetFrame(unet), "unet.conv_in", "unet.up_blocks.2"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure(name: str, gen: nn.Module, x: torch.Tensor, taps: tuple[str, str], method: str) -> list:
    gen.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        listed, t_list = timed(lambda: list_taps(gen, x, capture=method))
        best, t_suggest = timed(lambda: suggest_taps(gen, x, top=1, capture=method, progress=False)[0])
        _, t_wrap = timed(lambda: shortcutify(gen, *taps, x, capture=method))
        captured = capture(gen, x, CaptureOptions(method=method))
    try:
        from shortcutify.core.taps import macs_up_to
    except ImportError:  # (a version before the one-pass count)
        t_pass = t_walk = float("nan")
    else:
        fast, t_pass = timed(lambda: macs_up_to(captured))
        walk, t_walk = timed(lambda: {n: sum(captured.macs.get(a.name, 0) for a in ancestors(n)) for n in captured.gm.graph.nodes})
        assert fast == walk, "the one-pass count differs from the walk"
    nodes = len(captured.gm.graph.nodes)
    print(f"{name}: {nodes} nodes, list_taps {t_list:.2f} s, suggest_taps {t_suggest:.2f} s ({best.enc_layer} -> {best.dec_layer}), "
          f"shortcutify {t_wrap:.2f} s; MACs up to every node: one pass {t_pass:.3f} s, walk {t_walk:.3f} s", flush=True)
    return [name, method, nodes, len(listed), round(t_list, 2), round(t_suggest, 2), round(t_wrap, 2), round(t_pass, 3), round(t_walk, 3),
            f"{best.enc_layer} -> {best.dec_layer}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the two smallest depths, no diffusers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depths", type=int, nargs="*", default=[25, 100, 300])
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    depths = sorted(args.depths)[:2] if args.quick else args.depths
    rows = []
    for depth in depths:
        rows.append(measure(f"residual, {depth} blocks", DeepResNet(depth), torch.randn(1, 3, 16, 16), ("down", f"body.{depth - 1}"), "fx"))
    made = None if args.quick else diffusers_unet()
    if made is not None:
        gen, enc, dec = made
        rows.append(measure("diffusers UNet2DModel (default layout)", gen, torch.randn(1, 3, 32, 32), (enc, dec), "export"))
    head = ["generator", "capture", "graph nodes", "taps listed", "list_taps s", "suggest_taps s", "shortcutify s",
            "MACs up to each node, one pass s", "same by ancestor walks s", "suggested"]
    md = table(head, rows)
    print(md)
    name = "graph_scale" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    path = write(name, {"machine": machine(), "version": __version__, "rows": rows, "markdown": md})
    print("wrote", path)


if __name__ == "__main__":
    main()
