"""The shortcut block: predicts the decoder-tap feature of the current frame.

``ShortcutBlock`` implements Shortcut-V2V's block with AdaBD (adaptive blending and
deformation). Shapes, for an encoder tap ``a`` of ``[B, Ca, Ha, Wa]`` and a decoder tap
``f`` of ``[B, Cf, Hf, Wf]``, with ``h`` the block's width:

1. channel reduction: 1×1 conv + ReLU, ``a -> [B, h, Hf, Wf]`` (resized to the decoder
   tap's resolution when the taps differ), ``f_ref -> [B, h, Hf, Wf]``;
2. coarse alignment: a light conv stack on ``[a_t, a_ref]`` at half resolution predicts
   one flow ``[B, 2, Hf/2, Wf/2]`` (dy, dx); it is up-sampled and warps the reduced
   ``a_ref`` and ``f_ref`` at full resolution (one bilinear ``grid_sample``);
3. AdaBD: a light conv stack on ``[aligned a_ref, a_t]`` predicts 3×3 deformable offsets
   ``[B, 18, Hf, Wf]`` and a blending mask ``m = sigmoid(.)`` ``[B, 9, Hf, Wf]``; one
   modulated deformable conv with shared weights is applied to the aligned ``f_ref``
   (offsets, modulation ``1 − m``) and to ``a_t`` (zero offsets, modulation ``m``).
   Because the conv is linear the two applications are fused: the sampled columns are
   blended first, then one matrix product;
4. reconstruction: ReLU, then 1×1 conv to ``[B, Cf, Hf, Wf]``, added to the coarsely
   warped full-width ``f_ref`` (a residual the paper's block does not have: the block
   starts as "reuse the warped reference feature", zero-initialised reconstruction,
   and learns the correction; the warp costs 4·Cf MACs per position).

Everything that depends only on the reference (its reductions, the half-resolution
copy of ``a_ref``) is computed once per keyframe by :meth:`ShortcutBlock.prepare_reference`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deform import columns_matmul, deform_columns, unfold_columns

__all__ = ["LightConv", "ShortcutBlock", "Reference", "default_width", "adabd_conv"]


class Reference(NamedTuple):
    """What a keyframe leaves for the frames after it (per stream, batched).

    Attributes:
        a_half: reduced encoder feature at half resolution, ``[B, h, ceil(Hf/2), ceil(Wf/2)]``.
        full: the reduced encoder and decoder features and the decoder feature itself at
            the decoder tap's resolution, concatenated, ``[B, 2h + Cf, Hf, Wf]``.
    """

    a_half: Tensor
    full: Tensor


def _light_groups(cin: int, cout: int, min_per_group: int = 8) -> int:
    g = math.gcd(cin, cout)
    best = 1
    for d in range(1, g + 1):
        if g % d == 0 and cin // d >= min_per_group and cout // d >= min_per_group:
            best = d
    return best


class LightConv(nn.Module):
    """Heterogeneous conv: a grouped 3×3 conv and a pointwise conv in parallel, summed.

    ``[B, cin, H, W] -> [B, cout, H, W]``; MACs per position ``9·cin·cout/g + cin·cout``.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(cin, cout, 3, padding=1, groups=_light_groups(cin, cout), bias=False)
        self.point = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(x) + self.point(x)


def default_width(enc_channels: int, dec_channels: int) -> int:
    """Block width ``h`` from the tap widths: half the narrower tap, at least 4."""
    return max(4, min(enc_channels, dec_channels) // 2)


def _zero_(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def adabd_conv(
    f_ref: Tensor, a: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """AdaBD's shared-weight modulated deformable conv, fused into one matrix product.

    Computes ``deform_conv2d(f_ref, offset, weight, mask=1 − m) + deform_conv2d(a, 0, weight, mask=m)``
    (bias added once) by blending the sampled columns first. Stride 1, "same" padding.

    Args:
        f_ref: aligned reference feature ``[B, h, H, W]``.
        a: current feature ``[B, h, H, W]``.
        offset: ``[B, 2·k², H, W]`` offsets for ``f_ref`` (interleaved dy, dx).
        mask: ``m`` in [0, 1], ``[B, k², H, W]``: the weight of the current frame per tap.
        weight: ``[h_out, h, k, k]``; bias: ``[h_out]``.

    Returns:
        ``(out, cols_ref)``: ``out`` is ``[B, h_out, H, W]``; ``cols_ref`` the sampled
        reference columns ``[B, h, k², H·W]`` (for the alignment loss).
    """
    k = int(weight.shape[-1])
    b, _, hh, ww = a.shape
    cols_ref = deform_columns(f_ref, offset, k, padding=k // 2)  # [B, h, k², P]
    cols_cur = unfold_columns(a, k, padding=k // 2)
    m = mask.reshape(b, 1, k * k, hh * ww)
    blended = torch.lerp(cols_ref, cols_cur, m)  # (1 − m)·ref + m·cur
    return columns_matmul(blended, weight, bias, out_hw=(hh, ww)), cols_ref


class ShortcutBlock(nn.Module):
    """Shortcut-V2V's block with AdaBD, sized from the taps.

    Args:
        enc_channels: ``Ca``, channels of the encoder tap.
        dec_channels: ``Cf``, channels of the decoder tap.
        width: ``h``, the block's internal width (default :func:`default_width`).
        kernel_size: kernel of the AdaBD deformable conv (odd).

    Call ``prepare_reference(a_ref, f_ref)`` on a keyframe, then ``block(a_t, reference)``
    on the following frames; it returns ``(f_hat, aligned)`` where ``f_hat`` is
    ``[B, Cf, Hf, Wf]`` and ``aligned`` is the prediction from the warped reference alone
    (mask ``m = 0``) when :attr:`return_aligned` is set (for distillation), else ``None``.
    """

    def __init__(self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        h = default_width(enc_channels, dec_channels) if width is None else int(width)
        if h < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.enc_channels, self.dec_channels, self.width, self.kernel_size = enc_channels, dec_channels, h, kernel_size
        k2 = kernel_size * kernel_size
        self.reduce_enc = nn.Conv2d(enc_channels, h, 1)
        self.reduce_dec = nn.Conv2d(dec_channels, h, 1)
        self.flow_head = nn.Sequential(
            LightConv(2 * h, h), nn.ReLU(), LightConv(h, h), nn.ReLU(), _zero_(nn.Conv2d(h, 2, 1))
        )
        self.adabd_head = nn.Sequential(
            LightConv(2 * h, h), nn.ReLU(), LightConv(h, h), nn.ReLU(), _zero_(nn.Conv2d(h, 3 * k2, 1))
        )
        self.weight = nn.Parameter(torch.empty(h, h, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(h))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's fan-in init
        bound = 1 / math.sqrt(h * k2)
        nn.init.uniform_(self.bias, -bound, bound)
        self.reconstruct = _zero_(nn.Conv2d(h, dec_channels, 1))
        self.return_aligned = False

    def extra_repr(self) -> str:
        return f"enc_channels={self.enc_channels}, dec_channels={self.dec_channels}, width={self.width}"

    def _reduce_enc(self, a: Tensor, size: tuple[int, int]) -> Tensor:
        a = F.relu(self.reduce_enc(a))
        if tuple(a.shape[-2:]) != tuple(size):
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        return a

    def prepare_reference(self, a_ref: Tensor, f_ref: Tensor) -> Reference:
        """Reference state from a keyframe's taps ``a_ref [B, Ca, Ha, Wa]``, ``f_ref [B, Cf, Hf, Wf]``."""
        size = (f_ref.shape[-2], f_ref.shape[-1])
        a = self._reduce_enc(a_ref, size)
        f = F.relu(self.reduce_dec(f_ref))
        half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
        a_half = F.interpolate(a, size=half, mode="bilinear", align_corners=False)
        return Reference(a_half, torch.cat([a, f, f_ref], dim=1))

    def forward(self, a: Tensor, reference: Reference) -> tuple[Tensor, Tensor | None]:
        """Predict the decoder-tap feature ``[B, Cf, Hf, Wf]`` from ``a [B, Ca, Ha, Wa]``."""
        a_ref_half, ref = reference
        h, k = self.width, self.kernel_size
        b, _, hf, wf = ref.shape
        a = self._reduce_enc(a, (hf, wf))
        a_half = F.interpolate(a, size=a_ref_half.shape[-2:], mode="bilinear", align_corners=False)

        # coarse alignment: one flow at half resolution, warping at full resolution
        flow = self.flow_head(torch.cat([a_half, a_ref_half], dim=1))
        flow = F.interpolate(flow, size=(hf, wf), mode="bilinear", align_corners=False)
        # half-resolution pixels -> full-resolution pixels (Python scalars: no host-to-device copy per frame)
        flow = torch.cat([flow[:, :1] * (hf / a_half.shape[-2]), flow[:, 1:] * (wf / a_half.shape[-1])], dim=1)
        aligned = deform_columns(ref, flow, 1).view(b, ref.shape[1], hf, wf)
        a_ref, f_ref, f_warped = aligned[:, :h], aligned[:, h : 2 * h], aligned[:, 2 * h :]

        # AdaBD: offsets and blending mask, then one fused modulated deformable conv
        pred = self.adabd_head(torch.cat([a_ref, a], dim=1))
        k2 = k * k
        offset, mask = pred[:, : 2 * k2], torch.sigmoid(pred[:, 2 * k2 :])
        fused, cols_ref = adabd_conv(f_ref, a, offset, mask, self.weight, self.bias)
        f_hat = f_warped + self.reconstruct(F.relu(fused))
        aligned_only = None
        if self.return_aligned:
            ref_only = columns_matmul(cols_ref, self.weight, self.bias, out_hw=(hf, wf))
            aligned_only = f_warped + self.reconstruct(F.relu(ref_only))
        return f_hat, aligned_only
