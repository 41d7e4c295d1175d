"""Keyframe policies: when a stateful :class:`~shortcutify.ShortcutV2V` runs the full model.

A policy is any object with ``interval`` (the largest gap between keyframes it will
produce, used to draw training pairs) and ``is_keyframe(frames_since_keyframe)``; the
module itself always takes a keyframe on the first frame, after ``reset()`` and when
the input's shape, dtype or device changes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["KeyframePolicy", "FixedInterval"]


@runtime_checkable
class KeyframePolicy(Protocol):
    """Decides, before each non-forced frame, whether it is a keyframe."""

    @property
    def interval(self) -> int:
        """The largest number of frames from one keyframe to the next (α)."""
        ...

    def is_keyframe(self, frames_since_keyframe: int) -> bool:
        """``frames_since_keyframe`` is 1 on the frame right after a keyframe."""
        ...


class FixedInterval:
    """A keyframe every ``n`` frames (the paper's policy; ``n`` = 3 for RecycleGAN).

    ``FixedInterval(1)`` runs the full model on every frame.
    """

    def __init__(self, n: int = 3) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"FixedInterval needs an integer interval >= 1, got {n!r}")
        self.n = n

    @property
    def interval(self) -> int:
        return self.n

    def is_keyframe(self, frames_since_keyframe: int) -> bool:
        return frames_since_keyframe >= self.n

    def __repr__(self) -> str:
        return f"FixedInterval({self.n})"

    def to_config(self) -> dict:
        return {"type": "FixedInterval", "n": self.n}
