"""The half-resolution block layout: AdaBD at half the decoder tap's resolution (the layout
``resolution="auto"`` builds on narrow taps; the default of 0.10 and earlier).

Shapes, for an encoder tap ``a`` ``[B, Ca, Ha, Wa]``, a decoder tap ``f`` ``[B, Cf, Hf, Wf]``,
width ``h`` and ``(Hh, Wh) = (⌈Hf/2⌉, ⌈Wf/2⌉)``:

1. reduction: a 2×2 stride-2 conv + ReLU (space-to-depth then 1×1: nothing is discarded by
   resampling), ``a -> [B, h, Hh, Wh]`` (``a`` first resized to the decoder tap's
   resolution when the taps differ), ``f_ref -> [B, h, Hh, Wh]``;
2. coarse alignment: one flow ``[B, 2, Hh, Wh]`` from the flow head on ``[a_t, a_ref]``
   (plus, with ``motion_prior=True``, a parameter-free correlation of the raw encoder taps on
   a coarse grid, :func:`~shortcutify.ops.correlation_flow`) warps the reduced ``a_ref`` and
   ``f_ref`` (one bilinear ``grid_sample``);
3. AdaBD at ``(Hh, Wh)`` (see :class:`~shortcutify.core.blocks.ShortcutBlock`);
4. reconstruction: ReLU, a 2×2 stride-2 transposed conv back to ``[B, Cf, Hf, Wf]``
   (depth-to-space), added to the full-width ``f_ref`` warped at full resolution by the
   same flow (a residual the paper's block does not have: the warp costs 4·Cf MACs per
   position).

Against the paper's layout (:class:`~shortcutify.core.blocks.FullResolutionBlock`) it trades
accuracy for speed on CPU, where the block's time is set by gathers and memory traffic
rather than MACs; ``benchmarks/RESULTS.md`` has both measured.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import warp
from ...ops.layout import to_channels_last, to_contiguous
from .base import BlockOutput, ShortcutBlock, tap_size_of
from .resize import resize

__all__ = ["HalfReference", "HalfResolutionBlock"]


class HalfReference(NamedTuple):
    """What a keyframe leaves for the frames after it (per stream, batched).

    Attributes:
        reduced: the reduced encoder and decoder taps, concatenated,
            ``[B, 2h, ⌈Hf/2⌉, ⌈Wf/2⌉]`` (on CPU in channels-last memory).
        feature: the decoder tap itself, ``[B, Cf, Hf, Wf]`` (on CPU in channels-last
            memory, the layout in which the CPU warp gathers its rows in place); never
            shares memory with the tap.
        motion: the encoder tap (or its reduction, the first ``h`` channels of ``reduced``) as
            the motion prior compares it, ``[B, C, h, w]`` on the prior's coarse grid
            (``[B, 0, 1, 1]`` for a block without the prior).
        tap: ``[B, 0, Ha, Wa]``, no values: its shape records the size of the encoder tap the reference was
            made from (a frame whose encoder tap has another size is refused).
    """

    reduced: Tensor
    feature: Tensor
    motion: Tensor
    tap: Tensor


def _pad_even(x: Tensor) -> Tensor:
    """Replicate-pad ``[B, C, H, W]`` at the bottom/right to even ``H`` and ``W``."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class HalfResolutionBlock(ShortcutBlock):
    """The shortcut block with everything but the final warp at half the decoder tap's resolution.

    Args: as :class:`~shortcutify.core.blocks.ShortcutBlock`. ``resolution="half"``.
    """

    resolution = "half"

    def _reductions(self, enc_channels: int, dec_channels: int, h: int) -> tuple[nn.Module, nn.Module]:
        return nn.Conv2d(enc_channels, h, 2, stride=2), nn.Conv2d(dec_channels, h, 2, stride=2)

    def _reconstruction(self, h: int, dec_channels: int) -> nn.Module:
        return nn.ConvTranspose2d(h, dec_channels, 2, stride=2)

    def _reduce(self, x: Tensor, size: tuple[int, int], conv: nn.Module) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, h, ⌈Hf/2⌉, ⌈Wf/2⌉]``: resize to ``size``, 2×2 stride-2 conv, ReLU."""
        return F.relu(conv(_pad_even(resize(x, size))))

    def reduction_inputs(self, a: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        size = (f.shape[-2], f.shape[-1])
        return _pad_even(resize(a, size)), _pad_even(f)

    def reduce_encoder_tap(self, a: Tensor, size: tuple[int, int]) -> Tensor:
        """The encoder tap ``a [B, Ca, Ha, Wa]`` as the block works on it, for the decoder tap's
        ``size = (Hf, Wf)``: ``[B, h, ⌈Hf/2⌉, ⌈Wf/2⌉]`` (what the flow head and AdaBD read; the
        prepared reference holds the keyframe's in its first ``h`` channels of ``reduced``)."""
        return self._reduce(a, size, self.reduce_enc)

    def prepare_reference(self, a_ref: Tensor, f_ref: Tensor) -> HalfReference:
        size = (f_ref.shape[-2], f_ref.shape[-1])
        reduced = torch.cat([self.reduce_encoder_tap(a_ref, size), self._reduce(f_ref, size, self.reduce_dec)], dim=1)
        feature = f_ref
        if f_ref.device.type == "cpu":  # the layout in which the CPU warps fastest (row gathers read it in place)
            reduced, feature = to_channels_last(reduced), to_channels_last(f_ref)
        if feature is f_ref:  # (to_channels_last copies unless the tap already is channels-last)
            feature = feature.clone()  # the state must not share memory with the tap (nor the teacher's output)
        h = self.width
        motion = self.motion_features(a_ref, reduced.shape[-2:], reduced[:, :h]) if self.motion_prior else a_ref.new_zeros(a_ref.shape[0], 0, 1, 1)
        return HalfReference(reduced, feature, motion, tap_size_of(a_ref))

    def reference_size(self, reference: Any) -> tuple[int, int] | None:
        if isinstance(reference, HalfReference):
            return int(reference.feature.shape[-2]), int(reference.feature.shape[-1])
        return super().reference_size(reference)

    def _predict(self, a: Tensor, reference: HalfReference, return_aligned: bool) -> BlockOutput:
        ref_reduced, f_ref, ref_motion, _ = reference
        h = self.width
        hf, wf = f_ref.shape[-2:]
        tap = a
        a = self.reduce_encoder_tap(a, (hf, wf))  # [B, h, Hf/2, Wf/2]
        prior = self._prior(tap, ref_motion, (ref_reduced.shape[-2], ref_reduced.shape[-1]), a)

        # coarse alignment: one flow (half-resolution pixels) warps the reduced reference
        flow = self.flow_head(torch.cat([a, ref_reduced[:, :h]], dim=1))
        if prior is not None:
            flow = flow + prior
        aligned = warp(ref_reduced, flow)
        a_ref, f_ref_h = aligned[:, :h], aligned[:, h:]

        fused, ref_only = self._adabd(a_ref, a, f_ref_h, return_aligned)

        # the correction, back at full resolution (transposed 2×2 stride-2 conv), is added
        # to the full-width reference feature warped by the same flow at full resolution
        def correction(x: Tensor) -> Tensor:
            x = F.relu(x)
            if x.device.type == "cpu":  # the CPU's transposed conv is an order of magnitude faster in channels-last
                return to_contiguous(self.reconstruct(to_channels_last(x)))[..., :hf, :wf]
            return self.reconstruct(x)[..., :hf, :wf]

        f_hat, aligned_only = correction(fused), (correction(ref_only) if ref_only is not None else None)
        flow_full = F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=False)[..., :hf, :wf] * 2.0
        if aligned_only is None:  # warped last, added in the same pass (into f_hat's memory off the fast path)
            return BlockOutput(warp(f_ref, flow_full, residual=f_hat, inplace=f_hat.is_contiguous()), None)
        f_warped = warp(f_ref, flow_full)
        return BlockOutput(f_hat + f_warped, aligned_only + f_warped)  # in f_hat's memory format (see full.py)
