"""The block's data-dependent start: its reductions set from the teacher's taps on training frames.

:func:`start_from_frames` draws frames from the training clips (the pairs a step would draw, both
frames of each; with their own random generator, so that the steps' draws do not change), runs
the teacher on them and hands the keyframe taps to
:meth:`~shortcutify.core.blocks.ShortcutBlock.init_reductions`. :func:`~shortcutify.distill` does
this before its first step (``data_init``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch

from ..core.blocks import REDUCTION_SHIFT, START_REDUCTIONS, KeyframeTaps
from ..core.checks import channels_last_inputs
from .clips import ClipSource, sample_pairs, to_inputs

__all__ = ["DATA_INIT_FRAMES", "frame_taps", "resolve_data_init", "start_from_frames"]

#: frames whose taps :func:`start_from_frames` gathers (the teacher runs once on each)
DATA_INIT_FRAMES = 32


def resolve_data_init(data_init: bool | Literal["auto"], block: Any) -> bool:
    """``data_init`` as a decision for ``block``: ``"auto"`` is ``True`` for an untrained block
    (:attr:`~shortcutify.core.blocks.ShortcutBlock.untrained`) and ``False`` for one already
    trained, whose reductions are kept.

    Raises:
        ValueError: ``data_init`` is not ``True``, ``False`` or ``"auto"``.
    """
    if data_init == "auto":
        return bool(block.untrained)
    if isinstance(data_init, bool):
        return data_init
    raise ValueError(f"data_init must be True, False or 'auto', got {data_init!r}")


def frame_taps(
    sv: Any, source: ClipSource, max_gap: int, *, seed: int, crop: tuple[int, int] | None, device: torch.device,
    frames: int = DATA_INIT_FRAMES, chunk: int = 8,
) -> Iterator[KeyframeTaps]:
    """The teacher's taps on ``frames`` training frames: both frames of ``frames // 2`` pairs drawn as
    the steps draw them (``max_gap``, ``crop``), with a generator seeded by ``seed`` alone (the same on
    every process), run ``chunk`` frames per teacher call on ``device``, without autograd."""
    pairs = sample_pairs(
        source, max(1, frames // 2), max_gap, torch.Generator().manual_seed(seed * 1_000_003 + 500_009), crop=crop,
        channels_last=channels_last_inputs(sv.example_inputs),
    )
    n = pairs.reference[0].shape[0]
    dtype = next(sv.block.parameters()).dtype
    for inputs in (pairs.reference, pairs.current):
        for i in range(0, n, chunk):
            x = to_inputs(tuple(t[i : i + chunk] for t in inputs), device, dtype)
            with torch.no_grad():  # (closed before the yield: a grad mode set across a yield leaks to the caller)
                taps = sv.run_keyframe(*x).taps
            yield taps


def start_from_frames(
    sv: Any, source: ClipSource, max_gap: int, *, seed: int, crop: tuple[int, int] | None, device: torch.device,
    frames: int = DATA_INIT_FRAMES, shift: float = REDUCTION_SHIFT, reductions: tuple[str, ...] = START_REDUCTIONS,
) -> None:
    """Set ``sv.block``'s reductions from the teacher's taps on training frames (:func:`frame_taps`;
    ``shift`` and ``reductions``: :meth:`~shortcutify.core.blocks.ShortcutBlock.init_reductions`'s).

    Frames whose taps are not finite (NaN or Inf in the frame, or a teacher that overflows on it) are
    left out; where none is left the block stays as built, with a warning (the first step then
    reports the inputs or the loss as :func:`~shortcutify.distill` does)."""
    def finite() -> Iterator[KeyframeTaps]:  # streamed: the taps of all the frames are never held at once
        for t in frame_taps(sv, source, max_gap, seed=seed, crop=crop, device=device, frames=frames):
            ok = _finite_rows(t)
            if bool(ok.all()):
                yield t
            elif bool(ok.any()):
                yield KeyframeTaps(t.enc[ok], t.dec[ok])

    taps = finite()
    first = next(taps, None)
    if first is None:
        warnings.warn(f"data_init: the teacher's taps are not finite on any of the {frames} sample frames; "
                      "the block starts as built", RuntimeWarning, stacklevel=3)
        return
    sv.block.init_reductions(itertools.chain([first], taps), shift=shift, reductions=reductions)


def _finite_rows(taps: KeyframeTaps) -> torch.Tensor:
    """``[B]`` bool: the frames whose encoder and decoder taps are finite throughout."""
    return torch.isfinite(taps.enc).flatten(1).all(1) & torch.isfinite(taps.dec).flatten(1).all(1)
