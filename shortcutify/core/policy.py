"""Keyframe policies: when a stateful :class:`~shortcutify.ShortcutV2V` runs the full model.

A policy is any object with ``interval`` (the largest gap between keyframes it will
produce, used to draw training pairs) and ``is_keyframe(frames_since_keyframe)``; the
module itself always takes a keyframe on the first frame, after ``reset()`` and when
the input's shape, dtype or device changes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .checks import is_count

__all__ = ["KeyframePolicy", "FixedInterval", "policy_to_config", "policy_from_config"]


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
        if not is_count(n):
            raise ValueError(f"FixedInterval needs an integer interval >= 1, got {n!r}")
        self.n = int(n)

    @property
    def interval(self) -> int:
        return self.n

    def is_keyframe(self, frames_since_keyframe: int) -> bool:
        return frames_since_keyframe >= self.n

    def __repr__(self) -> str:
        return f"FixedInterval({self.n})"

    def to_config(self) -> dict[str, Any]:
        return {"type": "FixedInterval", "n": self.n}


def policy_to_config(policy: KeyframePolicy) -> dict[str, Any]:
    """A JSON-ready description of ``policy`` (``{"type": ..., ...}``); see :func:`policy_from_config`."""
    to_config = getattr(policy, "to_config", None)
    return dict(to_config()) if callable(to_config) else {"type": type(policy).__name__}


def policy_from_config(config: dict[str, Any]) -> KeyframePolicy | None:
    """The policy :func:`policy_to_config` described, or ``None`` if it cannot be rebuilt from JSON."""
    if config.get("type") == "FixedInterval":
        return FixedInterval(int(config["n"]))
    return None
