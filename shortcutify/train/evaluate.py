"""Fidelity of a :class:`~shortcutify.ShortcutV2V` to its teacher on held-out clips."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten

from .clips import as_clip, check_inputs, to_inputs
from .metrics import psnr, ssim

__all__ = ["EvalResult", "evaluate", "output_image"]


def output_image(out: Any) -> Tensor:
    """The image a generator's output stands for: the first floating 4-D tensor in it.

    ``[B, C, H, W]``; for a dict or tuple output that is the first such leaf (dicts in
    insertion order), e.g. ``out["frame"]``.
    """
    for leaf in tree_flatten(out)[0]:
        if isinstance(leaf, Tensor) and leaf.dim() == 4 and leaf.is_floating_point():
            return leaf
    raise ValueError("the generator's output holds no floating 4-D tensor [B, C, H, W] to compare")


@dataclass
class EvalResult:
    """Per-frame fidelity of shortcut frames (and of repeating the keyframe's output).

    Lists hold one entry per frame of every clip (one stream per clip), in order; ``keyframe[i]`` says whether frame ``i`` ran the full teacher. Means are
    over shortcut frames only (keyframes equal the teacher exactly).
    """

    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    psnr_repeat: list[float] = field(default_factory=list)
    ssim_repeat: list[float] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)

    def _mean(self, values: list[float]) -> float:
        sel = [v for v, k in zip(values, self.keyframe) if not k and math.isfinite(v)]
        return sum(sel) / len(sel) if sel else float("nan")

    @property
    def shortcut_frames(self) -> int:
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


@torch.no_grad()
def evaluate(sv: Any, clips: Iterable[Any], *, data_range: float = 2.0, max_clips: int | None = None) -> EvalResult:
    """Run ``sv`` over each clip (a fresh stream per clip) and compare with the teacher.

    Args:
        sv: a :class:`~shortcutify.ShortcutV2V`.
        clips: clips ``[T, C, H, W]`` (or tuples of them for multi-input generators; a
            leading batch dimension ``[T, B, C, H, W]`` is not supported — one stream per clip);
            floating frames, moved to the module's device and floating dtype.
        data_range: value range of the outputs (2.0 for tanh outputs in [-1, 1]).
        max_clips: evaluate at most this many clips.

    Returns:
        :class:`EvalResult`; the state of ``sv`` is reset before and after.

    Raises:
        TypeError, ValueError: a clip does not fit the example inputs (:func:`~shortcutify.train.clips.check_inputs`).
    """
    res = EvalResult()
    param = next(sv.block.parameters())
    like = torch.empty(0, dtype=param.dtype, device=param.device)  # the inputs' device and dtype
    was_training = sv.training
    sv.eval()
    try:
        for n, clip in enumerate(clips):
            if max_clips is not None and n >= max_clips:
                break
            frames = as_clip(clip, n)
            check_inputs(frames, sv.example_inputs, n)
            sv.reset()
            key_out: Tensor | None = None
            for t in range(frames[0].shape[0]):
                inputs = to_inputs(tuple(f[t : t + 1] for f in frames), like)
                out = output_image(sv(*inputs))
                teacher = out if sv.last_was_keyframe else output_image(sv.run_keyframe(*inputs)[0])
                if sv.last_was_keyframe:
                    key_out = out
                assert key_out is not None
                res.keyframe.append(sv.last_was_keyframe)
                res.psnr.append(psnr(out, teacher, data_range).mean().item())
                res.ssim.append(ssim(out, teacher, data_range).mean().item())
                res.psnr_repeat.append(psnr(key_out, teacher, data_range).mean().item())
                res.ssim_repeat.append(ssim(key_out, teacher, data_range).mean().item())
    finally:
        sv.reset()
        sv.train(was_training)
    return res
