"""Reference generators used by the examples, benchmarks and tests.

``ResnetGenerator`` has the layout of the CycleGAN/RecycleGAN ResNet generator
(reflection padding, instance norm, two stride-2 convs, residual blocks, two transposed
convs, tanh), so that its layer indices match the paper's taps: with ``n_down=2``
``model.4`` is the first down-sampling conv and ``model.{10 + n_blocks}`` the first
up-sampling transposed conv.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResnetBlock", "ResnetGenerator", "resnet_taps", "Vid2VidGenerator", "vid2vid_taps", "warp_frame"]


class ResnetBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with reflection padding and instance norm; ``[B, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            nn.InstanceNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=True),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN-style ResNet generator: ``[B, in_ch, H, W] -> [B, out_ch, H, W]`` in [-1, 1].

    ``H`` and ``W`` must be divisible by ``2**n_down``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 6, n_down: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=True),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        ch = ngf
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=True), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                nn.InstanceNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.n_blocks, self.n_down = n_blocks, n_down

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def resnet_taps(gen: ResnetGenerator) -> tuple[str, str]:
    """The paper's RecycleGAN taps: first down-sampling conv and first transposed conv outputs."""
    return "model.4", f"model.{4 + 3 * gen.n_down + gen.n_blocks}"


def warp_frame(image: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``image [B, C, H, W]`` by ``flow [B, 2, H, W]``, channel 0 ``dx``, channel 1 ``dy``, in pixels.

    Samples outside the image read the nearest border pixel. (The vid2vid teacher's own warp:
    not :func:`shortcutify.ops.warp`, whose flow is ``(dy, dx)`` and which reads zeros outside.)
    """
    b, _, h, w = image.shape
    ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    scale = torch.stack([2.0 / max(w - 1, 1) * torch.ones((), dtype=image.dtype), 2.0 / max(h - 1, 1) * torch.ones((), dtype=image.dtype)]).to(image.device)
    grid = base.unsqueeze(0) + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


torch.fx.wrap("warp_frame")  # traced as one call: its shape arithmetic is not graph material


class Vid2VidGenerator(nn.Module):
    """A vid2vid-style generator: label map and previous frame -> frame.

    ``forward(label [B, L, H, W], prev [B, 3, H, W]) -> {"frame", "hallucinated", "flow", "mask"}``.
    A shared trunk (7×7 conv, ``n_down`` stride-2 convs, residual blocks) encodes
    ``[label, prev]``; an image head hallucinates the frame, a flow head predicts a flow
    ``[B, 2, H, W]`` (pixels) and a mask ``[B, 1, H, W]``; the output blends the warped
    previous frame (weight ``mask``) with the hallucinated one. ``H, W`` divisible by ``2**n_down``.
    """

    def __init__(self, label_nc: int = 8, ngf: int = 32, n_blocks: int = 4, n_down: int = 2) -> None:
        super().__init__()
        trunk: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(label_nc + 3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):
            trunk += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        trunk += [ResnetBlock(ch) for _ in range(n_blocks)]
        self.trunk = nn.Sequential(*trunk)

        def up_path(cin: int, widths: list[int]) -> list[nn.Module]:
            layers: list[nn.Module] = []
            for cout in widths:
                layers += [
                    nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                    nn.InstanceNorm2d(cout),
                    nn.ReLU(True),
                ]
                cin = cout
            return layers

        widths = [ch // 2 ** (i + 1) for i in range(n_down)]
        self.image_head = nn.Sequential(*up_path(ch, widths), nn.ReflectionPad2d(3), nn.Conv2d(widths[-1], 3, 7), nn.Tanh())
        fw = [max(8, w // 2) for w in widths]
        self.flow_head = nn.Sequential(*up_path(ch, fw), nn.Conv2d(fw[-1], 3, 3, padding=1))
        self.label_nc, self.n_blocks, self.n_down = label_nc, n_blocks, n_down

    def forward(self, label: Tensor, prev: Tensor) -> dict[str, Tensor]:
        h = self.trunk(torch.cat([label, prev], dim=1))
        hallucinated = self.image_head(h)
        fm = self.flow_head(h)
        flow, mask = fm[:, :2], torch.sigmoid(fm[:, 2:3])
        frame = mask * warp_frame(prev, flow) + (1 - mask) * hallucinated
        return {"frame": frame, "hallucinated": hallucinated, "flow": flow, "mask": mask}


def vid2vid_taps(gen: Vid2VidGenerator) -> tuple[str, str]:
    """Encoder tap: the trunk's first down-sampling conv; decoder tap: the trunk's output."""
    return "trunk.4", f"trunk.{4 + 3 * gen.n_down + gen.n_blocks - 1}"
