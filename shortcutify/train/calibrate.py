"""Choosing an :class:`~shortcutify.AdaptiveKeyframes` threshold on footage: :func:`calibrate`.

The policy's decisions on a stream depend only on the change of each frame since its
keyframe (the encoder tap's frame-to-frame L1 steps summed since the keyframe, over the
keyframe tap's norm), so :func:`calibrate` measures the steps and norms once per clip,
forms the change of every frame against every earlier frame it could have as keyframe (up
to the policy's maximum interval) with the module's own arithmetic, and then replays the
policy exactly for every threshold at which a decision can flip. A keyframe-rate target needs the layers up to the encoder tap only; a quality target
also runs the teacher on every frame and the shortcut from every possible keyframe.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.caller import warn_caller
from ..core.capture import unwrap
from ..core.checks import check_flag, is_real, refuse_untensored
from ..core.module import ShortcutV2V
from ..core.outputs import OutputSelector, check_selector, output_image
from ..core.policy import AdaptiveKeyframes, change_since_keyframe, tap_l1
from .clips import as_clip, check_inputs, each_clip, refuse_single_clip, to_inputs
from .metrics import OutputRange, check_data_range, psnr

__all__ = ["Calibration", "calibrate"]


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` chose and what it gives on the calibration clips.

    Attributes:
        policy: the calibrated :class:`~shortcutify.AdaptiveKeyframes` (its
            ``expected_interval`` is ``1 / keyframe_rate``).
        keyframe_rate: keyframes per frame on the clips with it (each clip's first frame,
            always a keyframe, included).
        frames: frames in the clips.
        mean_psnr, worst_psnr: mean and lowest PSNR (dB) of its shortcut frames against the
            teacher, for a quality target (``None`` for a rate target).
        candidates: ``(threshold, keyframe rate)`` of every distinct outcome considered.
    """

    policy: AdaptiveKeyframes
    keyframe_rate: float
    frames: int
    mean_psnr: float | None
    worst_psnr: float | None
    candidates: tuple[tuple[float, float], ...] = field(repr=False)

    @property
    def threshold(self) -> float:
        """The calibrated policy's threshold (on the change described in :class:`~shortcutify.FrameSignal`)."""
        return self.policy.threshold


@dataclass
class _Clip:
    change: np.ndarray  # [T, M]: change[t, g] of frame t against frame t - g (g = 1..M-1), nan where t - g < 0
    quality: np.ndarray | None  # [T, M]: PSNR of frame t's shortcut from keyframe t - g


def _measure(
    sv: Any, frames: tuple[torch.Tensor, ...], gaps: int, quality: bool, data_range: float, param: torch.Tensor, seen: OutputRange | None,
    output: OutputSelector = None,
) -> _Clip:
    t_len = frames[0].shape[0]
    change = np.full((t_len, gaps + 1), np.nan)
    scores = np.full((t_len, gaps + 1), np.nan) if quality else None
    norms: deque[torch.Tensor] = deque(maxlen=gaps)  # |a|₁ of the last frames, [1] float32
    steps: deque[torch.Tensor] = deque(maxlen=gaps)  # |a_j − a_{j−1}|₁ of the last frames (this one's last)
    previous = None
    refs: deque[Any] = deque(maxlen=gaps)
    with torch.no_grad():
        for t in range(t_len):
            inputs = to_inputs(tuple(f[t : t + 1] for f in frames), param.device, param.dtype)
            if quality:
                key = sv.run_keyframe(*inputs)
                a = key.enc
                teacher = output_image(key.output, output)
                if seen is not None:
                    seen.add(teacher)
                for g, ref in enumerate(reversed(refs), start=1):
                    out = output_image(sv.predict(*inputs, reference=ref), output)
                    scores[t, g] = psnr(out, teacher, data_range).mean().item()  # type: ignore[index]
            else:
                a = sv.encode(*inputs)
            if previous is not None:
                steps.append(tap_l1(a - previous))
            for g, norm in enumerate(reversed(norms), start=1):
                travelled = torch.zeros(1)
                for step in list(steps)[-g:]:  # summed from the keyframe on, as the module does
                    travelled = travelled + step
                # (one row per clip, or several where the generator folds a stack's frames into its batch: the
                # module's policy then sees the largest change of any row)
                change[t, g] = float(change_since_keyframe(travelled, norm).max())
            norms.append(tap_l1(a))
            previous = a
            if quality:
                refs.append(sv.prepare_reference(key))
    return _Clip(change, scores)


def _replay(clips: list[_Clip], thresholds: np.ndarray, policy: AdaptiveKeyframes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replay ``policy`` with each threshold on every clip (vectorised over thresholds).

    Returns per threshold: keyframes, frames, sum and minimum of shortcut-frame PSNR
    (``nan``/``inf`` without quality).
    """
    n = thresholds.shape[0]
    keys = np.zeros(n)
    frames = 0
    total = np.zeros(n)
    worst = np.full(n, np.inf)
    for clip in clips:
        t_len = clip.change.shape[0]
        since = np.zeros(n, dtype=np.int64)
        keys += 1  # the first frame of a stream is a keyframe
        frames += t_len
        for t in range(1, t_len):
            since += 1
            change = clip.change[t, np.minimum(since, clip.change.shape[1] - 1)]
            key = (since >= policy.max_interval) | ((since >= policy.min_interval) & (change > thresholds))
            if clip.quality is not None:
                q = clip.quality[t, np.minimum(since, clip.quality.shape[1] - 1)]
                short = ~key
                total += np.where(short, q, 0.0)
                worst = np.where(short, np.minimum(worst, q), worst)
            keys += key
            since[key] = 0
    return keys, np.full(n, frames), total, worst


def calibrate(
    sv: Any,
    clips: Iterable[Any],
    *,
    keyframe_rate: float | None = None,
    min_psnr: float | None = None,
    policy: AdaptiveKeyframes | None = None,
    data_range: float | None = None,
    apply: bool = True,
    progress: bool = True,
    output: OutputSelector = None,
) -> Calibration:
    """Pick the :class:`~shortcutify.AdaptiveKeyframes` threshold for these clips.

    Give exactly one target:

    * ``keyframe_rate``: the keyframes per frame to reach on average (``1/3`` costs what
      :class:`~shortcutify.FixedInterval` ``(3)`` costs); the threshold whose rate is
      closest is chosen (the highest such threshold, on ties);
    * ``min_psnr``: the lowest PSNR (dB, against the teacher) a shortcut frame may have on
      these clips; the threshold with the fewest keyframes that keeps every shortcut frame
      at or above it is chosen.

    Each clip is one stream, played from its first frame (a keyframe), as
    :func:`~shortcutify.evaluate` does. Replays are exact: the chosen policy gives the
    reported rate when the module runs these clips.

    Args:
        sv: a :class:`~shortcutify.ShortcutV2V` (distilled, for a quality target).
        clips: clips ``[T, C, H, W]`` or tuples of them (one per ``forward`` argument).
        keyframe_rate: target keyframes per frame, in ``(0, 1]``.
        min_psnr: target lowest shortcut-frame PSNR in dB.
        policy: the policy whose threshold is chosen (its other settings are kept);
            default: ``sv.policy`` if it is an ``AdaptiveKeyframes``, else ``AdaptiveKeyframes()``.
        data_range: width of the outputs' value range for ``min_psnr`` (2.0 for tanh outputs in [-1, 1], 1.0
            for [0, 1]); None: 2.0, with a warning when the teacher's outputs do not look like [-1, 1].
        apply: set ``sv.policy`` to the calibrated policy.
        progress: show a progress bar over the clips.
        output: for ``min_psnr``, which part of the generator's output is the image compared (as in
            :func:`~shortcutify.evaluate`); None: the first floating ``[B, C, H, W]`` leaf.

    Raises:
        ValueError: no target or both, a target out of range, no clips, a clip of fewer than
            2 frames, or a quality target that no threshold reaches with shortcut frames left
            (the message gives the best one), a clip with another number of tensors than
            the example inputs, or clips on which no change is finite.
        TypeError: a clip's frames are not floating point (scale ``uint8`` video first), or ``output`` is not
            a selector.
        OutputSelectionError: (a ``ValueError``) for ``min_psnr``, ``output`` names no image of the generator's
            output, or it holds none.

    Warns:
        UserWarning: ``min_psnr`` without ``data_range``, and the teacher's outputs lie within [0, 1] or spread
            wider than [-1, 1] (:class:`~shortcutify.train.metrics.OutputRange`); the keyframe rate reached is far
            from ``keyframe_rate`` (clips too short or too few for it); or, with ``apply``, the new policy allows longer gaps than the
            block was distilled for (``sv.distilled_interval``; when that is unknown, than the
            policy it replaces, whose gaps :func:`~shortcutify.distill` trains on).
    """
    sv = unwrap(sv)  # (a compiled or DistributedDataParallel-wrapped module: the one inside)
    if not isinstance(sv, ShortcutV2V):
        raise TypeError(f"calibrate() takes a ShortcutV2V (from shortcutify() or load()), got {type(sv).__name__}")
    apply, progress = check_flag(apply, "apply"), check_flag(progress, "progress")
    refuse_untensored(sv.example_inputs, sv.teacher, "calibrate()")
    if (keyframe_rate is None) == (min_psnr is None):
        raise ValueError("calibrate() needs exactly one target: keyframe_rate=... (e.g. 1/3) or min_psnr=... (dB)")
    if keyframe_rate is not None and (not is_real(keyframe_rate) or not 0 < keyframe_rate <= 1):
        raise ValueError(f"keyframe_rate must be a number in (0, 1] (keyframes per frame; 1/3 = FixedInterval(3)), got {keyframe_rate!r}")
    if min_psnr is not None and not is_real(min_psnr):
        raise ValueError(f"min_psnr must be a finite number of dB, got {min_psnr!r}")
    checked_range = check_data_range(data_range)
    output = check_selector(output, "calibrate()")
    keyframe_rate = None if keyframe_rate is None else float(keyframe_rate)
    min_psnr = None if min_psnr is None else float(min_psnr)
    if policy is None:
        policy = sv.policy if isinstance(sv.policy, AdaptiveKeyframes) else AdaptiveKeyframes()
    if not isinstance(policy, AdaptiveKeyframes):
        raise TypeError(f"calibrate() chooses the threshold of an AdaptiveKeyframes policy, got {type(policy).__name__}")
    refuse_single_clip(clips)
    clip_list = [as_clip(c, i, sv.example_inputs) for i, c in enumerate(each_clip(clips, sv.example_inputs))]
    if not clip_list:
        raise ValueError("calibrate() needs at least one clip")
    for i, clip in enumerate(clip_list):
        check_inputs(clip, sv.example_inputs, i)
        if clip[0].shape[0] < 2:
            raise ValueError(
                f"clip {i} has {clip[0].shape[0]} frame(s); calibrate() needs clips of at least 2 frames (each clip's "
                "first frame is a keyframe whatever the threshold): give longer clips"
            )
    quality = min_psnr is not None
    seen = OutputRange() if quality and data_range is None else None
    param = next(sv.block.parameters())  # the inputs' device and dtype
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(clip_list), desc="calibrate", unit="clip", dynamic_ncols=True)
    was_training = sv.training
    sv.eval()
    measured = []
    try:
        for frames in clip_list:
            measured.append(_measure(sv, frames, policy.max_interval - 1, quality, checked_range, param, seen, output))
            if bar is not None:
                bar.update(1)
    finally:
        sv.train(was_training)
        if bar is not None:
            bar.close()

    hint = None if seen is None else seen.mismatch("calibrate()")
    if hint is not None:
        warn_caller(hint)
    finite = [np.isfinite(c.change) for c in measured]
    if not any(f.any() for f in finite):
        raise ValueError(
            "calibrate(): every change measured on these clips is NaN or infinite (the frames, or the generator's "
            "encoder features on them, are not finite), so no threshold can be chosen: check the clips"
        )
    values = np.unique(np.concatenate([c.change[f] for c, f in zip(measured, finite)] + [np.zeros(1)]))
    if values[-1] <= 0:
        raise ValueError(
            "calibrate(): nothing moves in these clips (every frame's encoder features equal its keyframe's: still or "
            "blank footage), so every threshold gives the same keyframes here and none can be chosen for real video: "
            "calibrate on clips of the footage the module will run on, with motion"
        )
    # a decision flips only where the threshold crosses a measured change: one candidate
    # per gap between neighbours (their midpoint), and one above them all
    candidates = np.concatenate([(values[:-1] + values[1:]) / 2, [values[-1] * 1.5 + 1e-6]])
    candidates = candidates[candidates > 0]
    keys, frames, total, worst = _replay(measured, candidates, policy)
    rates = keys / frames
    if keyframe_rate is not None:
        err = np.abs(rates - keyframe_rate)
        best = int(np.flatnonzero(err == err.min())[-1])  # thresholds ascend: the highest on ties
    else:
        ok = np.flatnonzero((worst >= min_psnr) & (keys < frames))  # (a threshold that leaves no shortcut frame reaches nothing)
        if ok.size == 0:
            some = np.flatnonzero(keys < frames)
            if some.size == 0:
                raise ValueError("no threshold leaves a shortcut frame on these clips: give longer clips")
            i = int(some[np.argmax(worst[some])])
            fix = (
                "Lower min_psnr or min_interval." if policy.min_interval > 1 else
                "Lower min_psnr, or distill the block (further) so that its shortcut frames come closer to the teacher "
                "(min_interval=1 already lets every frame be a keyframe)."
            )
            raise ValueError(
                f"no threshold keeps every shortcut frame at or above {min_psnr} dB on these clips with "
                f"min_interval={policy.min_interval}; the best reaches {worst[i]:.2f} dB (threshold {candidates[i]:.4g}). {fix}"
            )
        best = int(ok[np.lexsort((-candidates[ok], rates[ok]))[0]])  # fewest keyframes, then the highest threshold
    rate = float(rates[best])
    if keyframe_rate is not None and abs(rate - keyframe_rate) > max(0.05, 0.25 * keyframe_rate):
        warnings.warn(
            f"calibrate(): the keyframe rate closest to {keyframe_rate:.3g} that these clips allow is {rate:.3g} "
            f"({int(keys[best])} keyframes in {int(frames[best])} frames; every clip starts with one, and the policy "
            f"takes at least one every {policy.max_interval} frames): give longer or more clips, or another target",
            stacklevel=2,
        )
    chosen = policy.with_threshold(float(candidates[best]), expected_interval=min(1 / rate, float(policy.max_interval)))
    shortcut_frames = frames[best] - keys[best]
    result = Calibration(
        policy=chosen,
        keyframe_rate=rate,
        frames=int(frames[best]),
        mean_psnr=float(total[best] / shortcut_frames) if quality and shortcut_frames else None,
        worst_psnr=float(worst[best]) if quality and shortcut_frames else None,
        candidates=tuple((float(c), float(r)) for c, r in zip(candidates, rates)),
    )
    if apply:
        before = getattr(sv.policy, "interval", None)
        if sv.distilled_interval is None and isinstance(before, int) and chosen.max_interval > before:  # (else setting it warns)
            warnings.warn(
                f"calibrate() set {chosen!r} in place of {sv.policy!r}: it allows {chosen.max_interval - 1} frames from a "
                f"keyframe, and distill() trains on the gaps of the policy set when it runs (up to {before - 1} with the "
                f"one replaced). Distil (again) with this policy set, or calibrate with policy=AdaptiveKeyframes(max_interval={before}).",
                stacklevel=2,
            )
        sv.policy = chosen
    return result
