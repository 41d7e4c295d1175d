"""Resizing a tap to another tap's resolution (shared by the block layouts)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize", "half_size"]


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` ``[B, C, H, W]`` resized bilinearly to ``size`` (itself when already that size)."""
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    """``(⌈H/2⌉, ⌈W/2⌉)``."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2
