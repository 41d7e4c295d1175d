"""Keyframe policies: when a stateful :class:`~shortcutify.ShortcutV2V` runs the full model.

Before every frame that is not forced to be a keyframe, the module hands the policy a
:class:`FrameSignal` (one entry per stream of the batch) and the policy answers, per
stream, whether that stream takes a keyframe. A policy is any object with

* ``interval``: the largest number of frames from one keyframe to the next (α) that it
  will produce; :func:`~shortcutify.distill` trains on gaps up to ``interval - 1``;
* ``select(signal) -> Tensor`` ``[B]`` bool;
* optionally ``uses_change = True``: the module then computes :attr:`FrameSignal.change`
  (how far the encoder tap has moved since the keyframe), after the layers up to the
  encoder tap have run and before anything else; a policy without it sees ``change=None``
  and costs nothing per frame;
* optionally ``to_config()``, a JSON-ready dict with ``"type"``, so that :meth:`save`
  stores it and :func:`~shortcutify.load` rebuilds it (built-in policies have it).

The module always takes a keyframe on the first frame, after ``reset()`` (for the reset
streams) and when the inputs' shapes, dtypes or devices change. Policies written for
shortcutify < 0.4 (``interval`` and ``is_keyframe(frames_since_keyframe) -> bool``) keep
working: :func:`as_policy` adapts them, asking once per stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .caller import warn_caller
from .checks import is_count, is_real

__all__ = [
    "FrameSignal",
    "KeyframePolicy",
    "FixedInterval",
    "AdaptiveKeyframes",
    "CountPolicy",
    "as_policy",
    "tap_l1",
    "change_since_keyframe",
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
        change: ``[B]`` float32 (CPU), when the policy ``uses_change`` (else ``None``): how far
            the stream's encoder tap has travelled since its keyframe, relative to the
            keyframe's: ``Σ_j |a_j − a_{j−1}|₁ / |a_key|₁`` over the frames ``j`` after the
            keyframe up to this one (:func:`change_since_keyframe`); dimensionless.
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


def tap_l1(x: Tensor) -> Tensor:
    """The L1 norm of each stream's entry of ``x`` ``[B, ...]``: ``[B]`` float32 on CPU.

    Summed in at least float32 whatever ``x``'s dtype: a float16 tap's norm passes float16's largest value
    (65504) on feature maps of a few hundred pixels a side. One multiply-add per element of ``x`` (fvcore's
    count of the vector norm).
    """
    return torch.linalg.vector_norm(x.flatten(1), ord=1, dim=1, dtype=torch.promote_types(x.dtype, torch.float32)).float().cpu()


def change_since_keyframe(travelled: Tensor, keyframe_norm: Tensor) -> Tensor:
    """:attr:`FrameSignal.change`: the L1 path ``travelled`` since the keyframe over the keyframe tap's L1 norm.

    Args:
        travelled: ``[B]`` float32: ``Σ |a_j − a_{j−1}|₁`` over the frames ``j`` after the
            keyframe up to this one (:func:`tap_l1` of each step, summed in order).
        keyframe_norm: ``[B]`` float32: ``|a_key|₁``.

    Returns:
        ``[B]`` float32; 0 for a still stream, about 1 or more after a scene cut.
    """
    return travelled / keyframe_norm.clamp_min(torch.finfo(torch.float32).tiny)


class FixedInterval:
    """A keyframe every ``n`` frames (the paper's policy; ``n`` = 3 for RecycleGAN).

    ``FixedInterval(1)`` runs the full model on every frame.
    """

    uses_change = False

    def __init__(self, n: int = 3) -> None:
        if not is_count(n):
            raise ValueError(f"FixedInterval needs an integer interval from 1 to 2**63 - 2, got {n!r}")
        self.n = int(n)

    @property
    def interval(self) -> int:
        """The largest gap between keyframes it produces: ``n``."""
        return self.n

    def select(self, signal: FrameSignal) -> Tensor:
        """``[B]`` bool: the streams whose last keyframe is ``n`` or more frames back."""
        return signal.since_keyframe >= self.n

    def is_keyframe(self, frames_since_keyframe: int) -> bool:
        """The decision for one stream (the protocol of shortcutify < 0.4)."""
        return frames_since_keyframe >= self.n

    def __repr__(self) -> str:
        return f"FixedInterval({self.n})"

    def __eq__(self, other: object) -> bool:
        return _same_config(self, other)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_config(), sort_keys=True))

    def to_config(self) -> dict[str, Any]:
        """Its JSON-ready description, ``{"type": "FixedInterval", "n": n}`` (:func:`policy_from_config` rebuilds it)."""
        return {"type": "FixedInterval", "n": self.n}


def _same_config(policy: Any, other: object) -> bool:
    """Policies are equal when of one type with one description (an adaptive policy's counts of the frames it
    has decided are not part of it)."""
    return type(other) is type(policy) and other.to_config() == policy.to_config()  # type: ignore[attr-defined]


# The threshold AdaptiveKeyframes uses when not calibrated: the geometric middle of the
# thresholds that give FixedInterval(3)'s keyframe rate on the bikes training frames for
# the two bundled teachers (`python benchmarks/keyframes.py --choose-default`, README
# "Keyframes"). It depends on the teacher and the footage: calibrate() for yours.
DEFAULT_THRESHOLD = 0.54
#: the decided frames on which an uncalibrated AdaptiveKeyframes judges (once) whether it keyframes nearly all of them
UNCALIBRATED_FRAMES = 30


class AdaptiveKeyframes:
    """A keyframe when the video has moved far since the last one, within an interval range.

    A stream takes a keyframe when its encoder tap has travelled more than ``threshold``
    since the keyframe (:attr:`FrameSignal.change`: the frame-to-frame L1 steps of the tap,
    summed since the keyframe, over the keyframe tap's L1 norm), but never sooner than
    ``min_interval`` frames after the last keyframe, and always at ``max_interval`` frames.
    Summing the steps counts the whole path: motion keeps adding to it after the tap's
    distance to the keyframe's has saturated (content moved farther than the features'
    extent), which is when the block's alignment falls behind. A scene cut is one step as
    large as the tap itself and refreshes at once; a still stream refreshes only every
    ``max_interval`` frames. (Chosen by measurement against the distance to the keyframe, a
    pixel distance and others: ``benchmarks/keyframe_signals.py``, README "Keyframes".)

    The change is computed on every non-forced frame from the encoder tap that a shortcut
    frame needs anyway; a keyframe decided by it continues from the layers already run
    (see :meth:`~shortcutify.ShortcutV2V.cost` for the per-frame price, one multiply-add
    per element of the tap). The module keeps the previous frame's tap per stream.

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
        if not is_real(threshold) or threshold <= 0:
            raise ValueError(f"AdaptiveKeyframes needs a finite threshold > 0 (a relative L1 change since the keyframe), got {threshold!r}")
        if not is_count(min_interval):
            raise ValueError(f"min_interval must be an integer >= 1, got {min_interval!r}")
        if not is_count(max_interval) or int(max_interval) < 2 or int(max_interval) < int(min_interval):
            raise ValueError(
                f"max_interval must be an integer >= 2 and >= min_interval ({min_interval!r}), got {max_interval!r}"
            )
        if expected_interval is not None and (
            not is_real(expected_interval) or not 1 <= expected_interval <= int(max_interval)
        ):
            raise ValueError(f"expected_interval must be a number in [1, max_interval={max_interval}] or None, got {expected_interval!r}")
        self.threshold = float(threshold)
        self.min_interval = int(min_interval)
        self.max_interval = int(max_interval)
        self.expected_interval = None if expected_interval is None else float(expected_interval)
        self._free = self._taken = 0  # uncalibrated: frames the change decided, and keyframes it took on them

    @property
    def interval(self) -> int:
        """The largest gap between keyframes it produces: ``max_interval``."""
        return self.max_interval

    def select(self, signal: FrameSignal) -> Tensor:
        """``[B]`` bool: streams at ``max_interval`` frames from their keyframe, or at least ``min_interval`` with a
        change above ``threshold``."""
        since = signal.since_keyframe
        if signal.change is None:
            raise ValueError("AdaptiveKeyframes needs FrameSignal.change (the module computes it when uses_change is True)")
        free = (since >= self.min_interval) & (since < self.max_interval)
        key = (since >= self.max_interval) | (free & (signal.change > self.threshold))
        if self.expected_interval is None and self._free >= 0:
            self._watch(free, key)
        return key

    def _watch(self, free: Tensor, key: Tensor) -> None:
        """On its first :data:`UNCALIBRATED_FRAMES` decided frames, an uncalibrated threshold warns
        (once) if it took a keyframe on nearly every one of them; then it stops counting."""
        self._free += int(free.sum())
        self._taken += int((free & key).sum())
        if self._free < UNCALIBRATED_FRAMES:
            return
        taken, decided = self._taken, self._free
        self._free = -1  # judged: stop counting
        if taken >= 0.9 * decided:
            warn_caller(
                f"AdaptiveKeyframes(threshold={self.threshold:.4g}) took a keyframe on {taken} of the {decided} frames "
                "its threshold decided, so shortcut frames are rare: the threshold depends on the generator and the "
                "footage; choose one with shortcutify.calibrate(sv, clips, keyframe_rate=1/3) (or min_psnr=...)."
            )

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

    def __eq__(self, other: object) -> bool:
        return _same_config(self, other)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_config(), sort_keys=True))

    def to_config(self) -> dict[str, Any]:
        """Its JSON-ready description (:func:`policy_from_config` rebuilds it)."""
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
        TypeError: it is a class rather than an instance, has neither ``select(signal)`` nor
            ``is_keyframe(n)``, or no ``interval``.
        ValueError: its ``interval`` is not an integer >= 1.
    """
    if isinstance(policy, type):
        raise TypeError(
            f"policy must be a policy object, got the class {policy.__name__}: create one, e.g. {policy.__name__}(...)"
        )
    has_interval = hasattr(policy, "interval")
    if has_interval and not is_count(policy.interval):
        raise ValueError(
            f"{type(policy).__name__}.interval must be an integer >= 1 (the largest number of frames from one keyframe "
            f"to the next), got {policy.interval!r}"
        )
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
    """A JSON-ready description of ``policy`` (``{"type": ..., ...}``); see :func:`policy_from_config`.

    Raises:
        TypeError: the policy's ``to_config()`` returns something else than a JSON-ready dict with a ``"type"``.
    """
    to_config = getattr(policy, "to_config", None)
    if not callable(to_config):
        return {"type": type(policy).__name__}
    config = to_config()
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise TypeError(
            f"{type(policy).__name__}.to_config() must return a dict with a \"type\" string (and JSON values), got {config!r}"
        )
    try:
        json.dumps(config)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{type(policy).__name__}.to_config() returned a dict JSON cannot hold ({exc}): {config!r}") from exc
    return dict(config)


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
