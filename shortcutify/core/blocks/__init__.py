"""Shortcut blocks: one protocol (:class:`ShortcutBlock`), two layouts, chosen by name."""

from __future__ import annotations

from typing import Union

from .base import PRIOR_LEFT_OUT_EVERY, REDUCED_PRIORS, REDUCTION_SHIFT, REDUCTIONS, START_REDUCTIONS, BlockOutput, KeyframeTaps, LightConv, ShortcutBlock, channels_last_inside, default_width, motion_pool_for, motion_prior_name, prior_names
from .full import FullReference, FullResolutionBlock
from .half import HalfReference, HalfResolutionBlock

__all__ = [
    "ShortcutBlock",
    "HalfResolutionBlock",
    "FullResolutionBlock",
    "HalfReference",
    "FullReference",
    "Reference",
    "BlockOutput",
    "KeyframeTaps",
    "LightConv",
    "BLOCK_TYPES",
    "RESOLUTIONS",
    "make_block",
    "check_resolution",
    "default_width",
    "channels_last_inside",
    "motion_prior_name",
    "prior_names",
    "REDUCED_PRIORS",
    "motion_pool_for",
    "PRIOR_LEFT_OUT_EVERY",
    "REDUCTION_SHIFT",
    "REDUCTIONS",
    "START_REDUCTIONS",
]

#: what :meth:`ShortcutBlock.prepare_reference` returns for a keyframe: the layout's own reference type
Reference = Union[HalfReference, FullReference]

#: block layouts by the name ``shortcutify(..., resolution=...)`` takes
BLOCK_TYPES: dict[str, type[ShortcutBlock]] = {"half": HalfResolutionBlock, "full": FullResolutionBlock}
RESOLUTIONS = tuple(BLOCK_TYPES)


def check_resolution(resolution: object) -> str:
    """``resolution`` if it names a registered layout (a key of :data:`BLOCK_TYPES`, read live, so
    that layouts registered at run time count).

    Raises:
        ValueError: it names none (the message lists those that exist).
    """
    if not isinstance(resolution, str) or resolution not in BLOCK_TYPES:
        raise ValueError(f"resolution must be one of {tuple(BLOCK_TYPES)}, got {resolution!r}")
    return resolution


def make_block(
    resolution: str, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3,
    motion_prior: bool | str | None = False, motion_pool: int | None = None,
) -> ShortcutBlock:
    """The block of layout ``resolution`` (a key of :data:`BLOCK_TYPES`), sized from the taps.

    Args:
        resolution: the layout, ``"half"`` or ``"full"`` (or one registered in :data:`BLOCK_TYPES`).
        enc_channels: channels ``Ca`` of the encoder tap ``[B, Ca, h, w]``.
        dec_channels: channels ``Cf`` of the decoder tap ``[B, Cf, H, W]`` (what the block predicts).
        width: the block's inner width ``h`` (None: the layout's automatic width).
        kernel_size: AdaBD's kernel size (3: the only one built).
        motion_prior: a parameter-free motion estimate as the flow's start (see :func:`~shortcutify.shortcutify`).
        motion_pool: the prior's pooling factor (None: chosen per call from the feature's size; see :func:`motion_pool_for`).

    Raises:
        ValueError: ``resolution`` names no layout, ``motion_prior`` no estimator, or
            ``motion_pool`` is not an integer >= 1 (nor ``None``).
    """
    return BLOCK_TYPES[check_resolution(resolution)](
        enc_channels, dec_channels, width=width, kernel_size=kernel_size, motion_prior=motion_prior, motion_pool=motion_pool
    )
