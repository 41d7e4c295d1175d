"""The paper's block layout: AdaBD at the decoder tap's resolution.

1×1 reductions and reconstruction at the decoder tap's resolution ``(Hf, Wf)`` (the encoder tap's
reduction at the coarser of the two taps' resolutions, then resized: :func:`pointwise_resized`); the flow (the
flow head's, plus with ``motion_prior=True`` the parameter-free
:func:`~shortcutify.ops.correlation_flow`) is predicted at half of it and resized; the reduced reference taps and the decoder tap are
warped together by one ``grid_sample``; AdaBD runs at ``(Hf, Wf)``; the reconstruction is
added to the warped decoder tap. More accurate than
:class:`~shortcutify.core.blocks.HalfResolutionBlock` at the same width, slower on CPU; at half
its width it costs about the half layout's MACs, which is what ``resolution="auto"`` builds on
wide taps (``benchmarks/RESULTS.md``, "Block resolution").
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops import warp
from ...ops.layout import to_channels_last
from ...ops.pointwise import pointwise_conv_add
from .base import BlockOutput, ShortcutBlock, rows_inside, tap_size_of
from .resize import half_size, resize

__all__ = ["FullReference", "FullResolutionBlock"]


class FullReference(NamedTuple):
    """What a keyframe leaves for the frames after it (per stream, batched).

    Attributes:
        enc_half: the reduced encoder tap at half the decoder tap's resolution
            ``[B, h, ⌈Hf/2⌉, ⌈Wf/2⌉]`` (the flow head's input; channels-last memory where prepared
            for CPU inference, :func:`~shortcutify.core.blocks.base.rows_inside`).
        stacked: the reduced encoder tap, the reduced decoder tap and the decoder tap,
            concatenated, ``[B, 2h + Cf, Hf, Wf]`` (warped together; on CPU in channels-last
            memory).
        motion: the encoder tap (or its reduction, ``enc_half``) as the motion prior compares
            it, ``[B, C, h, w]`` on the prior's coarse grid (``[B, 0, 1, 1]`` for a block
            without the prior).
        tap: ``[B, 0, Ha, Wa]``, no values: its shape records the size of the encoder tap the reference was
            made from (a frame whose encoder tap has another size is refused).
    """

    enc_half: Tensor
    stacked: Tensor
    motion: Tensor
    tap: Tensor


def pointwise_resized(conv: nn.Module, x: Tensor, size: tuple[int, int]) -> Tensor:
    """``conv(resize(x, size))`` for a 1×1 ``conv``, with the conv run at the smaller of the two
    resolutions: bilinear resizing makes each output pixel a convex combination of input pixels
    (weights summing to one), so it commutes with a per-pixel affine map, bias included. On an
    encoder tap coarser than the decoder tap the conv then reads the coarse map and only its ``h``
    output channels are upsampled (not the tap's ``Ca``)."""
    if x.shape[-2] * x.shape[-1] < size[0] * size[1]:
        return resize(conv(x), size)
    return conv(resize(x, size))


class FullResolutionBlock(ShortcutBlock):
    """The shortcut block laid out as in the paper (AdaBD at the decoder tap's resolution).

    Args: as :class:`~shortcutify.core.blocks.ShortcutBlock`. ``resolution="full"``.
    """

    resolution = "full"

    def _reductions(self, enc_channels: int, dec_channels: int, h: int) -> tuple[nn.Module, nn.Module]:
        return nn.Conv2d(enc_channels, h, 1), nn.Conv2d(dec_channels, h, 1)

    def _reconstruction(self, h: int, dec_channels: int) -> nn.Module:
        return nn.Conv2d(h, dec_channels, 1)

    def reduction_inputs(self, a: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        size = (f.shape[-2], f.shape[-1])
        return (a if a.shape[-2] * a.shape[-1] < size[0] * size[1] else resize(a, size)), f

    def prepare_reference(self, a_ref: Tensor, f_ref: Tensor) -> FullReference:
        size = (f_ref.shape[-2], f_ref.shape[-1])
        a = F.relu(pointwise_resized(self.reduce_enc, a_ref, size))
        enc_half = F.interpolate(a, size=half_size(size), mode="bilinear", align_corners=False)
        stacked = torch.cat([a, F.relu(self.reduce_dec(f_ref)), f_ref], dim=1)
        motion = self.motion_features(a_ref, enc_half.shape[-2:], enc_half) if self.motion_prior else a_ref.new_zeros(a_ref.shape[0], 0, 1, 1)
        if rows_inside(a):
            enc_half = to_channels_last(enc_half)
        return FullReference(enc_half, to_channels_last(stacked) if stacked.device.type == "cpu" else stacked, motion, tap_size_of(a_ref))

    def reference_size(self, reference: Any) -> tuple[int, int] | None:
        if isinstance(reference, FullReference):
            return int(reference.stacked.shape[-2]), int(reference.stacked.shape[-1])
        return super().reference_size(reference)

    def _predict(self, a: Tensor, reference: FullReference, return_aligned: bool) -> BlockOutput:
        a_ref_half, ref, ref_motion, _ = reference
        h = self.width
        hf, wf = ref.shape[-2:]
        tap = a
        a = F.relu(pointwise_resized(self.reduce_enc, a, (hf, wf)))  # [B, h, Hf, Wf]
        rows = rows_inside(a)
        if rows:  # the convs, the interpolation and AdaBD's product are faster on CPU in channels-last memory
            a, a_ref_half = to_channels_last(a), to_channels_last(a_ref_half)
        a_half = F.interpolate(a, size=a_ref_half.shape[-2:], mode="bilinear", align_corners=False)
        prior = self._prior(tap, ref_motion, (a_ref_half.shape[-2], a_ref_half.shape[-1]), a_half)
        flow = self.flow_head(torch.cat([a_half, a_ref_half], dim=1))
        if prior is not None:
            flow = flow + prior
        flow = F.interpolate(flow, size=(hf, wf), mode="bilinear", align_corners=False)
        # half-resolution pixels -> full-resolution pixels (Python scalars: no host-to-device copy per frame)
        flow = torch.cat([flow[:, :1] * (hf / a_half.shape[-2]), flow[:, 1:] * (wf / a_half.shape[-1])], dim=1)
        aligned = warp(ref, flow)
        a_ref, f_ref, f_warped = aligned[:, :h], aligned[:, h : 2 * h], aligned[:, 2 * h :]
        fused, ref_only = self._adabd(a_ref, a, f_ref, return_aligned)
        # the output contiguous, whatever the warped reference's memory format (channels-last where the
        # CPU warp gathers rows): the tail reads contiguous memory faster
        if rows:  # the reconstruction and its sum without a whole-map transpose
            w, bias = self.reconstruct.weight, self.reconstruct.bias
            f_hat = pointwise_conv_add(F.relu(fused), w, bias, f_warped)
            aligned_only = pointwise_conv_add(F.relu(ref_only), w, bias, f_warped) if ref_only is not None else None
        else:
            f_hat = self.reconstruct(F.relu(fused)) + f_warped
            aligned_only = self.reconstruct(F.relu(ref_only)) + f_warped if ref_only is not None else None
        return BlockOutput(f_hat, aligned_only)
