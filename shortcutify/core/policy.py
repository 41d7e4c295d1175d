"""Keyframe policies: when a stateful :class:`~shortcutify.ShortcutV2V` runs the full model.

Before every frame that is not forced to be a keyframe, the module hands the policy a
:class:`FrameSignal` (one entry per stream of the batch) and the policy answers, per
stream, whether that stream takes a keyframe. A policy is any object with

* ``interval``: the largest number of frames from one keyframe to the next (α) that it
  will produce; :func:`~shortcutify.distill` trains on gaps up to ``interval - 1``;
* ``select(signal) -> Tensor`` ``[B]`` bool;
* optionally ``uses_change = True``: the module then computes :attr:`FrameSignal.change`
  (the encoder tap's distance to the keyframe's), after the layers up to the encoder tap
  have run and before anything else; a policy without it sees ``change=None`` and costs
  nothing per frame;
* optionally ``to_config()``, a JSON-ready dict with ``"type"``, so that :meth:`save`
  stores it and :func:`~shortcutify.load` rebuilds it (built-in policies have it).

The module always takes a keyframe on the first frame, after ``reset()`` (for the reset
streams) and when the inputs' shapes, dtypes or devices change. Policies written for
shortcutify < 0.4 (``interval`` and ``is_keyframe(frames_since_keyframe) -> bool``) keep
working: :func:`as_policy` adapts them, asking once per stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .checks import is_count

__all__ = [
    "FrameSignal",
    "KeyframePolicy",
    "FixedInterval",
    "AdaptiveKeyframes",
    "CountPolicy",
    "as_policy",
    "encoder_change",
    "policy_to_config",
    "policy_from_config",
    "DEFAULT_THRESHOLD",
]


@dataclass(frozen=True)
class FrameSignal:
    """What a keyframe policy sees before a frame, one entry per stream.

    Attributes:
        since_keyframe: ``[B]`` int64 (CPU): frames since each stream's last keyframe,
            counting this one (1 on the frame right after a keyframe).
        change: ``[B]`` float32 (CPU): :func:`encoder_change` of this frame's encoder tap
            against the one of the stream's keyframe, when the policy ``uses_change``;
            else ``None``.
    """

    since_keyframe: Tensor
    change: Tensor | None = None


@runtime_checkable
class KeyframePolicy(Protocol):
    """Decides, per stream and before each non-forced frame, whether it is a keyframe."""

    @property
    def interval(self) -> int:
        """The largest number of frames from one keyframe to the next (α)."""
        ...

    def select(self, signal: FrameSignal) -> Tensor:
        """``[B]`` bool: which streams take a keyframe on this frame."""
        ...


def encoder_change(a: Tensor, a_ref: Tensor, ref_norm: Tensor | None = None) -> Tensor:
    """Relative L1 distance of encoder taps, per stream: ``|a − a_ref|₁ / |a_ref|₁``.

    Args:
        a: this frame's encoder tap ``[B, C, H, W]``.
        a_ref: the keyframe's encoder tap, same shape.
        ref_norm: ``|a_ref|₁`` per stream ``[B]`` if already known (it is computed once per keyframe).

    Returns:
        ``[B]`` float32 on CPU; 0 for identical taps, about 1 or more for unrelated content.
        One multiply-add per element of ``a`` (the norm of the difference), counted in
        :meth:`~shortcutify.ShortcutV2V.cost`.
    """
    if ref_norm is None:
        ref_norm = torch.linalg.vector_norm(a_ref.flatten(1), ord=1, dim=1)
    diff = torch.linalg.vector_norm((a - a_ref).flatten(1), ord=1, dim=1)
    return (diff.float() / ref_norm.float().clamp_min(torch.finfo(torch.float32).tiny)).cpu()


class FixedInterval:
    """A keyframe every ``n`` frames (the paper's policy; ``n`` = 3 for RecycleGAN).

    ``FixedInterval(1)`` runs the full model on every frame.
    """

    uses_change = False

    def __init__(self, n: int = 3) -> None:
        if not is_count(n):
            raise ValueError(f"FixedInterval needs an integer interval >= 1, got {n!r}")
        self.n = int(n)

    @property
    def interval(self) -> int:
        return self.n

    def select(self, signal: FrameSignal) -> Tensor:
        return signal.since_keyframe >= self.n

    def is_keyframe(self, frames_since_keyframe: int) -> bool:
        """The decision for one stream (the protocol of shortcutify < 0.4)."""
        return frames_since_keyframe >= self.n

    def __repr__(self) -> str:
        return f"FixedInterval({self.n})"

    def to_config(self) -> dict[str, Any]:
        return {"type": "FixedInterval", "n": self.n}


# The threshold AdaptiveKeyframes uses when not calibrated: the geometric middle of the
# thresholds that give FixedInterval(3)'s keyframe rate on the bikes training frames for
# the two bundled teachers (`python benchmarks/keyframes.py --choose-default`, README
# "Keyframes"). It depends on the teacher and the footage: calibrate() for yours.
DEFAULT_THRESHOLD = 0.45


class AdaptiveKeyframes:
    """A keyframe when the video has moved away from the last one, within an interval range.

    A stream takes a keyframe when its encoder tap has drifted from the keyframe's by more
    than ``threshold`` (:func:`encoder_change`, a relative L1 distance, measured against the
    keyframe itself, so motion accumulates without summing per-frame steps), but never
    sooner than ``min_interval`` frames after the last keyframe, and always at
    ``max_interval`` frames. A scene cut changes the tap far more than motion does and
    refreshes at once; a still stream refreshes only every ``max_interval``
    frames.

    The change is computed on every non-forced frame from the encoder tap that a shortcut
    frame needs anyway; a keyframe decided by it continues from the layers already run
    (see :meth:`~shortcutify.ShortcutV2V.cost` for the per-frame price, one multiply-add
    per element of the tap).

    Args:
        threshold: the change (> 0) above which a keyframe is taken; pick one for your
            footage with :func:`~shortcutify.calibrate` (the default is a middle value
            measured on the bundled teachers).
        min_interval: fewest frames from one keyframe to a change-triggered one (≥ 1).
        max_interval: most frames from one keyframe to the next (≥ ``min_interval``, ≥ 2).
        expected_interval: mean frames per keyframe measured on some footage (set by
            :func:`~shortcutify.calibrate`; used for amortised costs), or ``None``.
    """

    uses_change = True

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        min_interval: int = 1,
        max_interval: int = 6,
        expected_interval: float | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"AdaptiveKeyframes needs a finite threshold > 0 (a relative L1 change), got {threshold!r}")
        if not is_count(min_interval):
            raise ValueError(f"min_interval must be an integer >= 1, got {min_interval!r}")
        if not is_count(max_interval) or int(max_interval) < 2 or int(max_interval) < int(min_interval):
            raise ValueError(
                f"max_interval must be an integer >= 2 and >= min_interval ({min_interval!r}), got {max_interval!r}"
            )
        if expected_interval is not None and (
            isinstance(expected_interval, bool) or not isinstance(expected_interval, (int, float))
            or not 1 <= expected_interval <= int(max_interval)
        ):
            raise ValueError(f"expected_interval must be a number in [1, max_interval={max_interval}] or None, got {expected_interval!r}")
        self.threshold = float(threshold)
        self.min_interval = int(min_interval)
        self.max_interval = int(max_interval)
        self.expected_interval = None if expected_interval is None else float(expected_interval)

    @property
    def interval(self) -> int:
        return self.max_interval

    def select(self, signal: FrameSignal) -> Tensor:
        since = signal.since_keyframe
        if signal.change is None:
            raise ValueError("AdaptiveKeyframes needs FrameSignal.change (the module computes it when uses_change is True)")
        return (since >= self.max_interval) | ((since >= self.min_interval) & (signal.change > self.threshold))

    def with_threshold(self, threshold: float, expected_interval: float | None = None) -> AdaptiveKeyframes:
        """A copy with another threshold (and expected interval)."""
        return AdaptiveKeyframes(
            threshold, min_interval=self.min_interval, max_interval=self.max_interval, expected_interval=expected_interval
        )

    def __repr__(self) -> str:
        extra = "" if self.expected_interval is None else f", expected_interval={self.expected_interval:.3g}"
        return (
            f"AdaptiveKeyframes(threshold={self.threshold:.4g}, min_interval={self.min_interval}, "
            f"max_interval={self.max_interval}{extra})"
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "AdaptiveKeyframes",
            "threshold": self.threshold,
            "min_interval": self.min_interval,
            "max_interval": self.max_interval,
            "expected_interval": self.expected_interval,
        }


class CountPolicy:
    """Adapts a policy of shortcutify < 0.4 (``interval`` and ``is_keyframe(n) -> bool``) to :class:`KeyframePolicy`.

    ``is_keyframe`` is asked once per stream with that stream's frames since its keyframe.
    """

    uses_change = False

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    @property
    def interval(self) -> int:
        return self.policy.interval

    def select(self, signal: FrameSignal) -> Tensor:
        return torch.tensor([bool(self.policy.is_keyframe(int(n))) for n in signal.since_keyframe.tolist()], dtype=torch.bool)

    def __repr__(self) -> str:
        return repr(self.policy)

    def to_config(self) -> dict[str, Any]:
        return policy_to_config(self.policy)


def as_policy(policy: Any) -> KeyframePolicy:
    """``policy`` as a :class:`KeyframePolicy`: itself, or a :class:`CountPolicy` around an old-style one.

    Raises:
        TypeError: it has neither ``select(signal)`` nor ``is_keyframe(n)``, or no ``interval``.
    """
    has_interval = hasattr(policy, "interval")
    if has_interval and callable(getattr(policy, "select", None)):
        return policy
    if has_interval and callable(getattr(policy, "is_keyframe", None)):
        return CountPolicy(policy)
    raise TypeError(
        f"policy must have .interval (the largest keyframe gap, an int) and .select(signal) -> bool tensor [B] "
        f"(see shortcutify.core.policy.FrameSignal), or the older .is_keyframe(frames_since_keyframe) -> bool; "
        f"got {type(policy).__name__}"
    )


def policy_to_config(policy: KeyframePolicy) -> dict[str, Any]:
    """A JSON-ready description of ``policy`` (``{"type": ..., ...}``); see :func:`policy_from_config`."""
    to_config = getattr(policy, "to_config", None)
    return dict(to_config()) if callable(to_config) else {"type": type(policy).__name__}


def policy_from_config(config: dict[str, Any]) -> KeyframePolicy | None:
    """The policy :func:`policy_to_config` described, or ``None`` if it cannot be rebuilt from JSON.

    Raises:
        KeyError, TypeError, ValueError: the description is malformed.
    """
    kind = config.get("type")
    if kind == "FixedInterval":
        return FixedInterval(config["n"])
    if kind == "AdaptiveKeyframes":
        return AdaptiveKeyframes(
            config["threshold"],
            min_interval=config["min_interval"],
            max_interval=config["max_interval"],
            expected_interval=config.get("expected_interval"),
        )
    return None
