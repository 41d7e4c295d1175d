"""Block layouts tried against the default (issue 12, item 4: close the half layout's gap to the full one).

Not part of the library: importing this module registers them in
:data:`shortcutify.core.blocks.BLOCK_TYPES`, so that ``ablation.py --resolution NAME`` distils
and evaluates them exactly like the built-in layouts. Each states the hypothesis it tests;
``benchmarks/RESULTS.md`` ("Block ablation") has what they measured.

* ``half-subpixel``: is the half layout's *output* the bottleneck? Its correction per 2x2 patch
  of the decoder tap is a linear image of ``h`` numbers (the 2x2 transposed conv), where the
  full layout's is ``4h`` (``h`` per pixel). Here AdaBD outputs ``4h`` channels at half
  resolution, a pixel shuffle spreads them over the patch and a 1x1 conv reconstructs per pixel.
* ``half-detail``: is the current frame's *detail* the bottleneck? A full-resolution 1x1 path of
  the current encoder tap is concatenated with the upsampled correction before the
  reconstruction (1x1 at full resolution).
* ``half-wide-sample``: is the width of what AdaBD samples and blends the bottleneck, rather
  than the heads'? ``half`` at twice the width (reductions, sampled features, AdaBD conv and
  reconstruction at ``2h``) with the heads of width ``h``: they read the first ``h`` channels
  of the reduced taps. ``--width`` sets the heads' ``h``.
* ``full-narrow-heads``: the full layout with AdaBD sampling and conv at ``h`` but both heads at
  ``h/2`` (reading the first ``h/2`` channels of the reduced taps): is it the heads' width or
  the sampled width that full's accuracy needs (the reverse of ``half-wide-sample``)?
* ``full-coarse-heads``: the full layout with its AdaBD head (offsets and mask) at half
  resolution, upsampled: does AdaBD need per-pixel offsets, or only per-pixel sampling?

What they showed (500 steps, 2 seeds each, cartoon teacher; figures in RESULTS.md): none came
near ``full``. Neither a wider output (``half-subpixel``) nor a wider sampled feature
(``half-wide-sample``) nor a full-resolution current-frame path (``half-detail``, worse than
``half``) moved ``half`` towards it, while taking ``full``'s AdaBD head down to half resolution
(``full-coarse-heads``) lost most of ``full``'s advantage, and halving its heads' width
(``full-narrow-heads``) gave about what ``full`` at half the width gives, at more CPU time. What
carries the full layout's accuracy is the offsets and blend mask predicted per full-resolution
pixel by heads of the block's width; the cheapest way to that measured so far is ``full`` at a
smaller width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortcutify.core.blocks import BLOCK_TYPES, BlockOutput, FullResolutionBlock, HalfResolutionBlock, LightConv
from shortcutify.core.blocks.half import HalfReference
from shortcutify.core.blocks.resize import resize
from shortcutify.ops import adabd_conv, warp
from shortcutify.ops.layout import to_channels_last, to_contiguous


def _full_resolution_flow(flow: Tensor, hf: int, wf: int) -> Tensor:
    """A half-resolution flow ``[B, 2, Hh, Wh]`` (its pixels) at ``(hf, wf)`` in full-resolution pixels."""
    return F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=False)[..., :hf, :wf] * 2.0


def _adabd_parameters(out_channels: int, in_channels: int, k: int) -> tuple[nn.Parameter, nn.Parameter]:
    """AdaBD's weight ``[out, in, k, k]`` and bias ``[out]``, initialised as the library's block (nn.Conv2d's rule)."""
    weight, bias = nn.Parameter(torch.empty(out_channels, in_channels, k, k)), nn.Parameter(torch.empty(out_channels))
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    nn.init.uniform_(bias, -1 / math.sqrt(in_channels * k * k), 1 / math.sqrt(in_channels * k * k))
    return weight, bias


class HalfSubpixelBlock(HalfResolutionBlock):
    """``half`` with AdaBD producing ``4h`` channels, pixel-shuffled to full resolution, then a 1x1 conv."""

    resolution = "half-subpixel"

    def __init__(self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3,
                 motion_prior: bool | str | None = False) -> None:
        super().__init__(enc_channels, dec_channels, width, kernel_size, motion_prior)
        h, k = self.width, self.kernel_size
        self.weight, self.bias = _adabd_parameters(4 * h, h, k)

    def _reconstruction(self, h: int, dec_channels: int) -> nn.Module:
        return nn.Conv2d(h, dec_channels, 1)

    def _correction(self, x: Tensor, hf: int, wf: int, current: Tensor | None) -> Tensor:
        x = F.pixel_shuffle(F.relu(x), 2)[..., :hf, :wf]
        if x.device.type == "cpu":
            return to_contiguous(self.reconstruct(to_channels_last(x)))
        return self.reconstruct(x)

    def _current_detail(self, a: Tensor, size: tuple[int, int]) -> Tensor | None:
        return None

    def _predict(self, a_in: Tensor, reference: HalfReference, return_aligned: bool) -> BlockOutput:
        ref_reduced, f_ref = reference.reduced, reference.feature
        if self.motion_prior:
            raise NotImplementedError(f"{self.resolution} is an experiment without the motion prior")
        h = self.width
        hf, wf = f_ref.shape[-2:]
        current = self._current_detail(a_in, (hf, wf))
        a = self._reduce(a_in, (hf, wf), self.reduce_enc)
        flow = self.flow_head(torch.cat([a, ref_reduced[:, :h]], dim=1))
        aligned = warp(ref_reduced, flow)
        fused, ref_only = self._adabd(aligned[:, :h], a, aligned[:, h:], return_aligned)
        f_warped = warp(f_ref, _full_resolution_flow(flow, hf, wf))
        f_hat = f_warped + self._correction(fused, hf, wf, current)
        aligned_only = f_warped + self._correction(ref_only, hf, wf, current) if ref_only is not None else None
        return BlockOutput(f_hat, aligned_only)


class HalfDetailBlock(HalfSubpixelBlock):
    """``half`` plus a full-resolution 1x1 path of the current encoder tap into the reconstruction."""

    resolution = "half-detail"

    def __init__(self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3,
                 motion_prior: bool | str | None = False) -> None:
        HalfResolutionBlock.__init__(self, enc_channels, dec_channels, width, kernel_size, motion_prior)
        h = self.width
        self.detail = nn.Conv2d(enc_channels, h, 1)
        self.upsample = nn.ConvTranspose2d(h, h, 2, stride=2)

    def _reconstruction(self, h: int, dec_channels: int) -> nn.Module:
        return nn.Conv2d(2 * h, dec_channels, 1)

    def _current_detail(self, a: Tensor, size: tuple[int, int]) -> Tensor:
        return F.relu(self.detail(resize(a, size)))

    def _correction(self, x: Tensor, hf: int, wf: int, current: Tensor | None) -> Tensor:
        assert current is not None
        up = F.relu(self.upsample(F.relu(x)))[..., :hf, :wf]
        return self.reconstruct(torch.cat([up, current], dim=1))


class HalfWideSampleBlock(HalfResolutionBlock):
    """``half`` with reductions, AdaBD and reconstruction at width ``2h`` and the heads at ``h``."""

    resolution = "half-wide-sample"

    def __init__(self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3,
                 motion_prior: bool | str | None = False) -> None:
        super().__init__(enc_channels, dec_channels, width, kernel_size, motion_prior)
        h, k = self.width, self.kernel_size
        self.reduce_enc, self.reduce_dec = nn.Conv2d(enc_channels, 2 * h, 2, stride=2), nn.Conv2d(dec_channels, 2 * h, 2, stride=2)
        self.weight, self.bias = _adabd_parameters(2 * h, 2 * h, k)
        self.reconstruct = nn.ConvTranspose2d(2 * h, dec_channels, 2, stride=2)
        nn.init.zeros_(self.reconstruct.weight)
        nn.init.zeros_(self.reconstruct.bias)

    def _predict(self, a_in: Tensor, reference: HalfReference, return_aligned: bool) -> BlockOutput:
        ref_reduced, f_ref = reference.reduced, reference.feature
        if self.motion_prior:
            raise NotImplementedError(f"{self.resolution} is an experiment without the motion prior")
        h, w2 = self.width, 2 * self.width
        hf, wf = f_ref.shape[-2:]
        a = self._reduce(a_in, (hf, wf), self.reduce_enc)  # [B, 2h, Hh, Wh]
        flow = self.flow_head(torch.cat([a[:, :h], ref_reduced[:, :h]], dim=1))
        aligned = warp(ref_reduced, flow)
        a_ref, f_ref_h = aligned[:, :w2], aligned[:, w2:]
        pred = self.adabd_head(torch.cat([a_ref[:, :h], a[:, :h]], dim=1))
        k2 = self.kernel_size**2
        fused, ref_only = adabd_conv(f_ref_h, a, pred[:, : 2 * k2], torch.sigmoid(pred[:, 2 * k2 :]), self.weight, self.bias,
                                     reference_only=return_aligned)

        def correction(x: Tensor) -> Tensor:
            return self.reconstruct(F.relu(x))[..., :hf, :wf]

        f_warped = warp(f_ref, _full_resolution_flow(flow, hf, wf))
        f_hat = f_warped + correction(fused)
        return BlockOutput(f_hat, f_warped + correction(ref_only) if ref_only is not None else None)


class FullCoarseHeadsBlock(FullResolutionBlock):
    """``full`` with the AdaBD head at half resolution (offsets rescaled, mask logits upsampled)."""

    resolution = "full-coarse-heads"

    def _predict(self, a: Tensor, reference, return_aligned: bool) -> BlockOutput:
        a_ref_half, ref = reference.enc_half, reference.stacked
        if self.motion_prior:
            raise NotImplementedError(f"{self.resolution} is an experiment without the motion prior")
        h, k2 = self.width, self.kernel_size**2
        hf, wf = ref.shape[-2:]
        a = F.relu(self.reduce_enc(resize(a, (hf, wf))))
        a_half = F.interpolate(a, size=a_ref_half.shape[-2:], mode="bilinear", align_corners=False)
        flow_half = self.flow_head(torch.cat([a_half, a_ref_half], dim=1))
        sy, sx = hf / a_half.shape[-2], wf / a_half.shape[-1]
        flow = F.interpolate(flow_half, size=(hf, wf), mode="bilinear", align_corners=False)
        aligned = warp(ref, torch.cat([flow[:, :1] * sy, flow[:, 1:] * sx], dim=1))
        f_ref, f_warped = aligned[:, h : 2 * h], aligned[:, 2 * h :]  # (the full-resolution a_ref is not used here)
        pred = self.adabd_head(torch.cat([warp(a_ref_half, flow_half), a_half], dim=1))
        pred = F.interpolate(pred, size=(hf, wf), mode="bilinear", align_corners=False)
        offset = torch.stack([pred[:, 0 : 2 * k2 : 2] * sy, pred[:, 1 : 2 * k2 : 2] * sx], dim=2).flatten(1, 2)
        fused, ref_only = adabd_conv(f_ref, a, offset, torch.sigmoid(pred[:, 2 * k2 :]), self.weight, self.bias,
                                     reference_only=return_aligned)
        f_hat = f_warped + self.reconstruct(F.relu(fused))
        aligned_only = f_warped + self.reconstruct(F.relu(ref_only)) if ref_only is not None else None
        return BlockOutput(f_hat, aligned_only)


def _narrow_head(g: int, out_channels: int) -> nn.Sequential:
    """The library's head shape (two light convs, a zero-initialised 1x1) at width ``g``."""
    last = nn.Conv2d(g, out_channels, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(LightConv(2 * g, g), nn.ReLU(), LightConv(g, g), nn.ReLU(), last)


class FullNarrowHeadsBlock(FullResolutionBlock):
    """``full`` with both heads at width ``h/2`` on the first ``h/2`` channels of the reduced taps."""

    resolution = "full-narrow-heads"

    def __init__(self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3,
                 motion_prior: bool | str | None = False) -> None:
        super().__init__(enc_channels, dec_channels, width, kernel_size, motion_prior)
        self.head_width = max(1, self.width // 2)
        self.flow_head = _narrow_head(self.head_width, 2)
        self.adabd_head = _narrow_head(self.head_width, 3 * self.kernel_size**2)

    def _predict(self, a: Tensor, reference, return_aligned: bool) -> BlockOutput:
        a_ref_half, ref = reference.enc_half, reference.stacked
        if self.motion_prior:
            raise NotImplementedError(f"{self.resolution} is an experiment without the motion prior")
        h, g, k2 = self.width, self.head_width, self.kernel_size**2
        hf, wf = ref.shape[-2:]
        a = F.relu(self.reduce_enc(resize(a, (hf, wf))))
        a_half = F.interpolate(a[:, :g], size=a_ref_half.shape[-2:], mode="bilinear", align_corners=False)
        flow = self.flow_head(torch.cat([a_half, a_ref_half[:, :g]], dim=1))
        sy, sx = hf / a_half.shape[-2], wf / a_half.shape[-1]
        flow = F.interpolate(flow, size=(hf, wf), mode="bilinear", align_corners=False)
        aligned = warp(ref, torch.cat([flow[:, :1] * sy, flow[:, 1:] * sx], dim=1))
        a_ref, f_ref, f_warped = aligned[:, :h], aligned[:, h : 2 * h], aligned[:, 2 * h :]
        pred = self.adabd_head(torch.cat([a_ref[:, :g], a[:, :g]], dim=1))
        fused, ref_only = adabd_conv(f_ref, a, pred[:, : 2 * k2], torch.sigmoid(pred[:, 2 * k2 :]), self.weight, self.bias,
                                     reference_only=return_aligned)
        f_hat = f_warped + self.reconstruct(F.relu(fused))
        aligned_only = f_warped + self.reconstruct(F.relu(ref_only)) if ref_only is not None else None
        return BlockOutput(f_hat, aligned_only)


VARIANTS = (HalfSubpixelBlock, HalfDetailBlock, HalfWideSampleBlock, FullCoarseHeadsBlock, FullNarrowHeadsBlock)
for _cls in VARIANTS:
    BLOCK_TYPES.setdefault(_cls.resolution, _cls)
