"""Sizing a block from its taps: its MACs at a width, the automatic width, and the automatic layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..cost import count_macs
from . import BLOCK_TYPES, make_block
from .base import default_width, motion_pool_for

__all__ = ["block_macs", "auto_width", "auto_layout", "check_layout_choice", "AUTO", "FULL_WIDTH_FLOOR", "FULL_MACS_RATIO"]

#: ``resolution=AUTO``: the layout chosen from the taps (:func:`auto_layout`)
AUTO = "auto"
#: the narrowest full-resolution block :func:`auto_layout` builds
FULL_WIDTH_FLOOR = 8
#: how many times the half-resolution block's MACs :func:`auto_layout`'s full-resolution block may cost
FULL_MACS_RATIO = 1.1


def block_macs(
    resolution: str,
    width: int,
    enc_shape: tuple[int, ...],
    dec_shape: tuple[int, ...],
    factory: dict[str, Any] | None = None,
    motion_prior: bool | str | None = False,
) -> int:
    """fvcore MACs of one block call at the tap shapes ``[B, C, H, W]`` (reference preparation excluded)."""
    factory = factory or {}
    pool = motion_pool_for((dec_shape[-2], dec_shape[-1])) if motion_prior else None
    block = make_block(resolution, enc_shape[1], dec_shape[1], width=width, motion_prior=motion_prior, motion_pool=pool).to(**factory)
    a = torch.zeros(enc_shape, **factory)
    f = torch.zeros(dec_shape, **factory)
    with torch.no_grad():
        ref = block.prepare_reference(a, f)
    return count_macs(block, a, ref)[0]


def auto_width(enc_shape: tuple[int, ...], dec_shape: tuple[int, ...], skipped: int, macs: Callable[[int], int]) -> tuple[int, int]:
    """The block width: half the narrower tap (the paper's ratio), shrunk if needed.

    The widest width whose block costs at most half the ``skipped`` MACs (so that a
    shortcut frame costs clearly less than the teacher); if none does, the widest whose
    block costs less than the skipped part; else width 1 (and ``shortcutify()`` warns).

    Args:
        enc_shape, dec_shape: the taps' shapes ``[B, C, H, W]``.
        skipped: MACs of the part of the generator that a shortcut frame skips.
        macs: the block's MACs at a width (:func:`block_macs` at these shapes; called
            O(log width) times, so cache it where it is called often).

    Returns:
        ``(width, the block's MACs at that width)``.
    """
    hi = default_width(enc_shape[1], dec_shape[1])
    m = macs(hi)
    if 2 * m <= skipped:
        return hi, m
    for budget in (skipped / 2, skipped - 1):
        lo_w, hi_w, best = 1, hi - 1, None
        while lo_w <= hi_w:  # block MACs grow with the width: binary search
            mid = (lo_w + hi_w) // 2
            m = macs(mid)
            if m <= budget:
                best, lo_w = (mid, m), mid + 1
            else:
                hi_w = mid - 1
        if best is not None:
            return best
    return 1, macs(1)


def check_layout_choice(resolution: object) -> str:
    """``resolution`` if it is :data:`AUTO` or a registered layout name, else ``ValueError``."""
    if not isinstance(resolution, str) or (resolution != AUTO and resolution not in BLOCK_TYPES):
        raise ValueError(f"resolution must be {AUTO!r} or one of {tuple(BLOCK_TYPES)}, got {resolution!r}")
    return resolution


def auto_layout(
    enc_shape: tuple[int, ...], dec_shape: tuple[int, ...], skipped: int, macs: Callable[[str, int], int]
) -> tuple[str, int, int]:
    """The layout and width of ``resolution="auto"``.

    The full-resolution layout at half the half-resolution layout's automatic width (at least
    :data:`FULL_WIDTH_FLOOR`), where that block costs at most :data:`FULL_MACS_RATIO` times the
    half-resolution block's MACs; else the half-resolution layout at its automatic width. On taps
    wide enough for the halved width, the two cost about the same MACs and the full layout
    distils to more accurate blocks; on narrow taps the floor makes it several times costlier,
    and the half layout stays (``benchmarks/RESULTS.md``, "Block resolution").

    Args:
        enc_shape, dec_shape: the taps' shapes ``[B, C, H, W]``.
        skipped: MACs of the part of the generator that a shortcut frame skips.
        macs: the block's MACs for a layout name and a width (cache it where it is called often).

    Returns:
        ``(layout name, width, the block's MACs)``.
    """
    half_width, half_macs = auto_width(enc_shape, dec_shape, skipped, lambda w: macs("half", w))
    full_width = max(FULL_WIDTH_FLOOR, half_width // 2)
    full_macs = macs("full", full_width)
    if full_macs <= FULL_MACS_RATIO * half_macs and full_macs < skipped:
        return "full", full_width, full_macs
    return "half", half_width, half_macs
