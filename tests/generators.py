"""Small generators used by the tests: fixed ones and a hypothesis strategy for random ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn


class TinyUNet(nn.Module):
    """Encoder convs, a bottleneck, and a decoder that concatenates an encoder skip."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.inc = nn.Conv2d(3, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid1 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.mid2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.fuse = nn.Conv2d(2 * c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.inc(x))
        d = F.relu(self.down(s))
        m = F.relu(self.mid2(F.relu(self.mid1(d))))
        u = F.relu(self.up(m))
        return torch.tanh(self.out(F.relu(self.fuse(torch.cat([u, s], dim=1)))))


class FourConvs(nn.Module):
    """Four 3x3 convs ``a`` (3 -> 8), ``b``, ``c`` (8 -> 8), ``d`` (8 -> 3) for tests to wire in their own
    ``forward`` (taps ``"a"`` -> ``"c"`` skip ``b`` and ``c``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c, self.d = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)


class TwoInputGen(nn.Module):
    """vid2vid-like: ``forward(label, prev) -> {"frame": ..., "mask": ...}`` with a side branch."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.enc_label = nn.Conv2d(4, c, 3, padding=1)
        self.enc_prev = nn.Conv2d(3, c, 3, padding=1)
        self.down = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.res = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.up = nn.Conv2d(2 * c, 4 * c, 3, padding=1)
        self.mask_head = nn.Conv2d(c, 1, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, label: torch.Tensor, prev: torch.Tensor) -> dict[str, torch.Tensor]:
        p = F.relu(self.enc_prev(prev))
        h = torch.cat([F.relu(self.enc_label(label)), p], 1)
        h = F.relu(self.down(h))
        h = h + F.relu(self.res(h))
        h = F.pixel_shuffle(self.up(h), 2)
        m = torch.sigmoid(self.mask_head(p))  # side branch from an input-side feature
        frame = m * torch.tanh(self.out(h)) + (1 - m) * prev
        return {"frame": frame, "mask": m}


# ----------------------------------------------------------------------------- random generators
@dataclass(frozen=True)
class Op:
    kind: str  # conv | down | up | res | cat
    arg: int = 0  # output channels for conv/down; source index for cat; 0 = nearest, 1 = bilinear, 2 = convT for up


class RandomGen(nn.Module):
    """A generator built from a list of :class:`Op`; traceable (static structure)."""

    def __init__(self, in_ch: int, ops: tuple[Op, ...]) -> None:
        super().__init__()
        self.ops = ops
        layers = []
        chans = [in_ch]
        ch = in_ch
        for op in ops:
            if op.kind in ("conv", "down"):
                layers.append(nn.Conv2d(ch, op.arg, 3, stride=2 if op.kind == "down" else 1, padding=1))
                ch = op.arg
            elif op.kind == "up":
                layers.append(nn.ConvTranspose2d(ch, ch, 2, stride=2) if op.arg == 2 else nn.Identity())
            elif op.kind == "res":
                layers.append(nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1)))
            elif op.kind == "cat":
                ch = ch + chans[op.arg]
                layers.append(nn.Conv2d(ch, ch, 1))
            chans.append(ch)
        self.layers = nn.ModuleList(layers)
        self.head = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        h = x
        for op, layer in zip(self.ops, self.layers):
            if op.kind in ("conv", "down"):
                h = F.relu(layer(h))
            elif op.kind == "up":
                h = layer(h) if op.arg == 2 else F.interpolate(h, scale_factor=2.0, mode="nearest" if op.arg == 0 else "bilinear")
            elif op.kind == "res":
                h = h + layer(h)
            elif op.kind == "cat":
                h = layer(torch.cat([h, outs[op.arg]], dim=1))
            outs.append(h)
        return torch.tanh(self.head(h))


@st.composite
def random_generators(draw: st.DrawFn, max_ops: int = 7) -> tuple[RandomGen, torch.Tensor]:
    """A random tiny generator and an example input ``[B, 3, H, W]``."""
    size = draw(st.sampled_from([8, 12, 16]))
    batch = draw(st.integers(1, 2))
    n = draw(st.integers(3, max_ops))
    ops: list[Op] = []
    scales = [1]  # down-sampling factor of each output (index 0 = input)
    for _ in range(n):
        scale = scales[-1]
        kinds = ["conv", "res"]
        if size // (scale * 2) >= 2:
            kinds.append("down")
        if scale > 1:
            kinds.append("up")
        same = [i for i, s in enumerate(scales[:-1]) if s == scale]
        if same:
            kinds.append("cat")
        kind = draw(st.sampled_from(kinds))
        if kind in ("conv", "down"):
            ops.append(Op(kind, draw(st.sampled_from([8, 12, 16]))))
            scale = scale * 2 if kind == "down" else scale
        elif kind == "up":
            ops.append(Op(kind, draw(st.integers(0, 2))))
            scale //= 2
        elif kind == "res":
            ops.append(Op(kind))
        else:
            ops.append(Op(kind, draw(st.sampled_from(same))))
        scales.append(scale)
    gen = RandomGen(3, tuple(ops))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    for p in gen.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(batch, 3, size, size)
    return gen, x


def moving_clips(n: int = 4, frames: int = 6, size: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """Clips ``[T, 3, size, size]`` of a smooth random texture drifting by about a pixel per frame."""
    g = torch.Generator().manual_seed(seed)
    clips = []
    for _ in range(n):
        big = F.interpolate(torch.rand(1, 3, size // 2, size // 2, generator=g) * 2 - 1, size=2 * size, mode="bilinear")
        dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
        frames_ = [big[0, :, size // 2 + t * dy : size // 2 + t * dy + size, size // 2 + t * dx : size // 2 + t * dx + size] for t in range(frames)]
        clips.append(torch.stack(frames_))
    return clips
