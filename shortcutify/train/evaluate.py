"""Fidelity of a :class:`~shortcutify.ShortcutV2V` to its teacher on held-out clips."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.caller import warn_caller
from ..core.capture import unwrap
from ..core.checks import check_flag, is_count, refuse_untensored
from ..core.module import ShortcutV2V
from ..core.outputs import OutputSelector, check_selector, image_count, output_image
from .clips import as_clip, check_inputs, each_clip, refuse_single_clip, to_inputs
from .metrics import OutputRange, check_data_range, psnr, ssim

__all__ = ["EvalResult", "evaluate", "output_image"]


#: dB: what an exact match (infinite PSNR) counts as in a mean (:class:`EvalResult`).
MAX_PSNR = 100.0


@dataclass
class EvalResult:
    """Per-frame fidelity of shortcut frames (and of repeating the keyframe's output).

    Lists hold one entry per frame of every clip (one stream per clip), in order; ``keyframe[i]`` says whether frame ``i`` ran the full teacher. Means are
    over shortcut frames only (keyframes equal the teacher exactly), the same frames for the shortcut
    and for repeating: a PSNR of an exact match (infinite) counts as :data:`MAX_PSNR` dB, and a frame
    with a NaN metric (non-finite outputs) is left out of every mean (:attr:`nan_frames` counts them).
    """

    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    psnr_repeat: list[float] = field(default_factory=list)
    ssim_repeat: list[float] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)

    def _counted(self) -> list[bool]:
        """Per frame: a shortcut frame whose four metrics are all numbers (not NaN)."""
        return [not k and not any(math.isnan(m) for m in ms)
                for k, *ms in zip(self.keyframe, self.psnr, self.ssim, self.psnr_repeat, self.ssim_repeat)]

    def _mean(self, values: list[float]) -> float:
        sel = [min(v, MAX_PSNR) for v, c in zip(values, self._counted()) if c]
        return sum(sel) / len(sel) if sel else float("nan")

    @property
    def nan_frames(self) -> int:
        """Shortcut frames left out of the means for a NaN metric."""
        return sum(not k for k in self.keyframe) - sum(self._counted())

    @property
    def shortcut_frames(self) -> int:
        """Frames that took the shortcut (the means are over these, less :attr:`nan_frames`)."""
        return sum(not k for k in self.keyframe)

    def summary(self) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM vs the teacher over shortcut frames, with the baseline."""
        return {
            "psnr": self._mean(self.psnr),
            "ssim": self._mean(self.ssim),
            "psnr_repeat": self._mean(self.psnr_repeat),
            "ssim_repeat": self._mean(self.ssim_repeat),
            "shortcut_frames": float(self.shortcut_frames),
        }


def evaluate(
    sv: Any,
    clips: Iterable[Any],
    *,
    data_range: float | None = None,
    max_clips: int | None = None,
    output: OutputSelector = None,
    progress: bool = True,
) -> EvalResult:
    """Run ``sv`` over each clip (a fresh stream per clip) and compare with the teacher.

    Args:
        sv: a :class:`~shortcutify.ShortcutV2V`.
        clips: clips ``[T, C, H, W]`` (or tuples of them for multi-input generators; a
            leading batch dimension ``[T, B, C, H, W]`` is not supported — one stream per clip), in any
            collection :func:`~shortcutify.distill` takes (a ``DataLoader``'s batches ``[N, T, C, H, W]`` are split);
            floating frames, moved to the module's device and floating dtype.
        data_range: width of the outputs' value range (2.0 for tanh outputs in [-1, 1], 1.0 for [0, 1]);
            None: 2.0, with a warning when the teacher's outputs do not look like [-1, 1].
        max_clips: evaluate at most this many clips.
        output: which part of the generator's output is the image compared
            (:data:`~shortcutify.core.outputs.OutputSelector`: a key, an index or a function); None: the first
            floating ``[B, C, H, W]`` leaf (:func:`~shortcutify.core.outputs.output_image`).
        progress: show a progress bar over the frames.

    Returns:
        :class:`EvalResult`; the state of ``sv`` is reset before and after.

    Raises:
        TypeError, ValueError: a clip does not fit the example inputs (:func:`~shortcutify.train.clips.check_inputs`),
            no clips, a single tensor instead of a collection, ``data_range`` or ``max_clips`` out of range,
            ``output`` not a selector.
        OutputSelectionError: (a ``ValueError``) ``output`` names no image of the generator's output, or it holds none.

    Warns:
        RuntimeWarning: no shortcut frame was run (means NaN), or some gave NaN metrics.
        UserWarning: ``data_range`` not given, and the teacher's outputs lie within [0, 1] or spread
            wider than [-1, 1] (:class:`~shortcutify.train.metrics.OutputRange`).
    """
    return compare_clips(sv, clips, data_range=data_range, max_clips=max_clips, output=output, who="evaluate()",
                         progress=check_flag(progress, "progress"))


@torch.no_grad()
def compare_clips(
    sv: Any, clips: Iterable[Any], *, data_range: float | None, max_clips: int | None, output: OutputSelector, who: str,
    progress: bool = False, range_hint: bool = True,
) -> EvalResult:
    """:func:`evaluate`, its warnings and errors naming ``who`` (``distill()``'s validation names itself);
    ``range_hint``: warn when ``data_range`` is None and the outputs do not look like the default range (a caller
    that validates again and again asks for it once)."""
    sv = unwrap(sv)  # (a compiled or DistributedDataParallel-wrapped module: the one inside)
    if not isinstance(sv, ShortcutV2V):
        raise TypeError(f"{who} takes a ShortcutV2V (from shortcutify() or load()), got {type(sv).__name__}")
    refuse_untensored(sv.example_inputs, sv.teacher, who)
    seen = OutputRange() if data_range is None and range_hint else None
    data_range = check_data_range(data_range)
    if max_clips is not None and not is_count(max_clips):
        raise ValueError(f"max_clips must be a positive integer or None, got {max_clips!r}")
    refuse_single_clip(clips)
    output = check_selector(output, who)
    res = EvalResult()
    images = 0  # floating image leaves in the output
    param = next(sv.block.parameters())
    was_training = sv.training
    sv.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=who.rstrip("()"), unit="frame", dynamic_ncols=True, leave=False)
    try:
        for n, clip in enumerate(each_clip(clips, sv.example_inputs)):
            if max_clips is not None and n >= max_clips:
                break
            frames = as_clip(clip, n, sv.example_inputs)
            check_inputs(frames, sv.example_inputs, n)
            sv.reset()
            key_out: Tensor | None = None
            for t in range(frames[0].shape[0]):
                inputs = to_inputs(tuple(f[t : t + 1] for f in frames), param.device, param.dtype)
                raw = sv(*inputs)
                images = max(images, image_count(raw))
                out = output_image(raw, output)
                teacher = out if sv.last_was_keyframe else output_image(sv.run_keyframe(*inputs)[0], output)
                if sv.last_was_keyframe:
                    key_out = out
                assert key_out is not None
                if seen is not None:
                    seen.add(teacher)
                res.keyframe.append(sv.last_was_keyframe)
                res.psnr.append(psnr(out, teacher, data_range).mean().item())
                res.ssim.append(ssim(out, teacher, data_range).mean().item())
                res.psnr_repeat.append(psnr(key_out, teacher, data_range).mean().item())
                res.ssim_repeat.append(ssim(key_out, teacher, data_range).mean().item())
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        sv.reset()
        sv.train(was_training)
    if not res.keyframe:
        raise ValueError(f"{who} got no clips: give at least one clip [T, C, H, W]")
    if not res.shortcut_frames:
        warn_caller(
            f"{who}: no shortcut frame was run (every frame a keyframe: clips of one frame, or a keyframe policy "
            "that keyframes them all); the means are NaN", RuntimeWarning,
        )
    if output is None and images > 1 and res.shortcut_frames and all(math.isinf(p) for p, k in zip(res.psnr, res.keyframe) if not k) and not all(
        math.isinf(p) for p, k in zip(res.psnr_repeat, res.keyframe) if not k
    ):
        warn_caller(
            f"{who}: the compared image (the first [B, C, H, W] leaf of an output of {images} images, output_image) "
            "equals the teacher's exactly on every shortcut frame, while repeating the keyframe does not: the shortcut "
            "computes it outside the layers it skips. If another output is the image to judge (a multi-stage model's "
            "last stage), name it with output= (a key, an index or a function) here and in distill()."
        )
    hint = None if seen is None else seen.mismatch(who)
    if hint is not None:
        warn_caller(hint)
    if res.nan_frames:
        warn_caller(
            f"{who}: {res.nan_frames} shortcut frame(s) gave NaN metrics (non-finite outputs) and are left out of "
            "the means; check the clips and the block", RuntimeWarning,
        )
    return res
