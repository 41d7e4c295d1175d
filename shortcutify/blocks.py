"""The shortcut block: predicts the decoder-tap feature of the current frame.

``ShortcutBlock`` implements Shortcut-V2V's block with AdaBD (adaptive blending and
deformation). Shapes, for an encoder tap ``a`` of ``[B, Ca, Ha, Wa]`` and a decoder tap
``f`` of ``[B, Cf, Hf, Wf]``, with ``h`` the block's width and ``(Hh, Wh) = (⌈Hf/2⌉, ⌈Wf/2⌉)``:

1. channel reduction to half resolution: a 2×2 stride-2 conv + ReLU (space-to-depth then
   1×1: nothing is discarded by resampling), ``a -> [B, h, Hh, Wh]`` (``a`` first resized to
   the decoder tap's resolution when the taps differ), ``f_ref -> [B, h, Hh, Wh]``;
2. coarse alignment: a light conv stack on ``[a_t, a_ref]`` predicts one flow
   ``[B, 2, Hh, Wh]`` (dy, dx) that warps the reduced ``a_ref`` and ``f_ref`` (one
   bilinear ``grid_sample``);
3. AdaBD: a light conv stack on ``[aligned a_ref, a_t]`` predicts 3×3 deformable offsets
   ``[B, 18, Hh, Wh]`` and a blending mask ``m = sigmoid(.)`` ``[B, 9, Hh, Wh]``; one
   modulated deformable conv with shared weights is applied to the aligned ``f_ref``
   (offsets, modulation ``1 − m``) and to ``a_t`` (zero offsets, modulation ``m``).
   Because the conv is linear the two applications are fused: the sampled columns are
   blended first, then one matrix product;
4. reconstruction: ReLU, then a 2×2 stride-2 transposed conv back to ``[B, Cf, Hf, Wf]``
   (depth-to-space), added to the full-width ``f_ref`` warped at full resolution by the
   same flow (a residual the paper's block does not have: the block starts as "reuse the
   warped reference feature", zero-initialised reconstruction, and learns the correction;
   the warp costs 4·Cf MACs per position).

Differences from the paper's block, and why: the paper runs AdaBD at the decoder tap's
resolution (``resolution="full"`` here: 1×1 reductions and reconstruction, the flow at half
resolution, AdaBD at full). By default (``resolution="half"``) everything but the final
warp runs at half of it, entered and left without resampling loss (2×2 stride-2 conv in,
transposed conv out). On CPU the block's time is set by gathers and memory traffic, not
MACs: with ResNet ngf=64 at 256×256 (2 threads) the full-resolution block takes about half
of a shortcut frame's time, the half-resolution one about a fifth, which is what brings a
shortcut frame to 2.5× the teacher's speed. The price is quality (2–3.5 dB PSNR vs the
teacher on the held-out videos of ``benchmarks/quality.py``); doubling the half-resolution
block's width recovered under 0.5 dB on average in short runs (``benchmarks/ablation.py``).

Everything that depends only on the reference (its reductions, its channels-last copy)
is computed once per keyframe by :meth:`ShortcutBlock.prepare_reference`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deform import columns_matmul, deform_columns, warp

__all__ = ["LightConv", "ShortcutBlock", "Reference", "default_width", "adabd_conv"]


class Reference(NamedTuple):
    """What a keyframe leaves for the frames after it (per stream, batched).

    With ``resolution="full"`` blocks, ``half`` is the reduced encoder tap alone
    ``[B, h, ⌈Hf/2⌉, ⌈Wf/2⌉]`` and ``feature`` the reduced encoder and decoder taps and the
    decoder tap at full resolution, concatenated, ``[B, 2h + Cf, Hf, Wf]``.

    Attributes:
        half: the reduced encoder and decoder taps at half the decoder tap's resolution,
            concatenated, ``[B, 2h, ceil(Hf/2), ceil(Wf/2)]`` (on CPU in channels-last memory).
        feature: the decoder tap itself, ``[B, Cf, Hf, Wf]`` (on CPU in channels-last memory:
            the layout in which ``grid_sample`` warps it fastest there).
    """

    half: Tensor
    feature: Tensor


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
    f_ref: Tensor,
    a: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    reference_only: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """AdaBD's shared-weight modulated deformable conv, fused into one matrix product.

    Computes ``deform_conv2d(f_ref, offset, weight, mask=1 − m) + deform_conv2d(a, 0, weight, mask=m)``
    (bias added once) by blending the sampled columns first. Stride 1, "same" padding.
    The reference's columns come from one ``grid_sample``; the current frame's are a
    strided view of the zero-padded input (no ``im2col`` copy); the blend is one ``lerp``
    and the conv one matrix product.

    Args:
        f_ref: aligned reference feature ``[B, h, H, W]``.
        a: current feature ``[B, h, H, W]``.
        offset: ``[B, 2·k², H, W]`` offsets for ``f_ref`` (interleaved dy, dx), in pixels.
        mask: ``m`` in [0, 1], ``[B, k², H, W]``: the weight of the current frame per tap.
        weight: ``[h_out, h, k, k]``; bias: ``[h_out]``.
        reference_only: also return the conv of the reference alone (``m = 0``).

    Returns:
        ``(out, ref_out)``: ``out`` is ``[B, h_out, H, W]``; ``ref_out`` the same for
        ``m = 0`` when ``reference_only``, else ``None``.
    """
    k = int(weight.shape[-1])
    b, c, hh, ww = a.shape
    p = k // 2
    cols_ref = deform_columns(f_ref, offset, k, padding=p)  # [B, h, k², H·W]
    padded = F.pad(a, (p, p, p, p))
    sb, sc, sy, sx = padded.stride()
    cols_cur = padded.as_strided((b, c, k, k, hh, ww), (sb, sc, sy, sx, sy, sx))  # im2col as a view
    m = mask.reshape(b, 1, k, k, hh, ww)
    ref6 = cols_ref.view(b, c, k, k, hh, ww)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (cols_ref, a, mask)):
        blended = torch.lerp(ref6, cols_cur, m)  # (1 − m)·ref + m·cur
    else:  # out=: one pass laid out like the columns, in place unless they are needed again
        blended = torch.lerp(ref6, cols_cur, m, out=torch.empty_like(ref6) if reference_only else ref6)
    out = columns_matmul(blended.reshape(b, c, k * k, hh * ww), weight, bias, out_hw=(hh, ww))
    return out, (columns_matmul(cols_ref, weight, bias, out_hw=(hh, ww)) if reference_only else None)


def _transpose_rows(src: Tensor, dst: Tensor) -> Tensor:
    """``dst[i] = src[i].T`` for ``[B, M, N]`` -> ``[B, N, M]`` (``dst`` contiguous), one 2-D copy per sample.

    torch copies a transposed 2-D matrix cache-blocked; a 3-D or 4-D layout change goes
    through the generic strided copy, about 3–4× slower on CPU.
    """
    for i in range(src.shape[0]):
        dst[i].copy_(src[i].t())
    return dst


def _to_channels_last(x: Tensor) -> Tensor:
    """``x`` ``[B, C, H, W]`` in channels-last memory (same values)."""
    b, c, hh, ww = x.shape
    if x.device.type != "cpu" or torch.is_grad_enabled() or not x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    _transpose_rows(x.view(b, c, hh * ww), out.permute(0, 2, 3, 1).view(b, hh * ww, c))
    return out


def _to_contiguous(x: Tensor) -> Tensor:
    """``x`` ``[B, C, H, W]`` in contiguous (NCHW) memory (same values)."""
    b, c, hh, ww = x.shape
    if x.device.type != "cpu" or torch.is_grad_enabled() or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _transpose_rows(x.permute(0, 2, 3, 1).reshape(b, hh * ww, c), out.view(b, c, hh * ww))
    return out


RESOLUTIONS = ("half", "full")


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


def _half(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] + 1) // 2, (size[1] + 1) // 2


def _pad_even(x: Tensor) -> Tensor:
    """Replicate-pad ``[B, C, H, W]`` at the bottom/right to even ``H`` and ``W``."""
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class ShortcutBlock(nn.Module):
    """Shortcut-V2V's block with AdaBD, sized from the taps.

    Args:
        enc_channels: ``Ca``, channels of the encoder tap.
        dec_channels: ``Cf``, channels of the decoder tap.
        width: ``h``, the block's internal width (default :func:`default_width`).
        kernel_size: kernel of the AdaBD deformable conv (odd).
        resolution: ``"half"`` (default): everything but the final warp runs at half the
            decoder tap's resolution, fast on CPU; ``"full"``: the paper's layout, AdaBD at
            the decoder tap's resolution (1×1 reductions and reconstruction), slower and
            more accurate (figures in ``benchmarks/RESULTS.md``).

    Call ``prepare_reference(a_ref, f_ref)`` on a keyframe, then ``block(a_t, reference)``
    on the following frames; it returns ``(f_hat, aligned)`` where ``f_hat`` is
    ``[B, Cf, Hf, Wf]`` and ``aligned`` is the prediction from the warped reference alone
    (mask ``m = 0``) when :attr:`return_aligned` is set (for distillation), else ``None``.
    """

    def __init__(
        self, enc_channels: int, dec_channels: int, width: int | None = None, kernel_size: int = 3, resolution: str = "half"
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        self.resolution = resolution
        full = resolution == "full"
        h = default_width(enc_channels, dec_channels) if width is None else int(width)
        if h < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.enc_channels, self.dec_channels, self.width, self.kernel_size = enc_channels, dec_channels, h, kernel_size
        k2 = kernel_size * kernel_size
        # 2×2 stride-2 convs in (space-to-depth + 1×1), a 2×2 stride-2 transposed conv out:
        # the block runs at half the decoder tap's resolution without discarding detail
        # ("full": 1×1 convs and reconstruction at the tap's resolution)
        self.reduce_enc = nn.Conv2d(enc_channels, h, 1) if full else nn.Conv2d(enc_channels, h, 2, stride=2)
        self.reduce_dec = nn.Conv2d(dec_channels, h, 1) if full else nn.Conv2d(dec_channels, h, 2, stride=2)
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
        self.reconstruct = _zero_(nn.Conv2d(h, dec_channels, 1) if full else nn.ConvTranspose2d(h, dec_channels, 2, stride=2))
        self.return_aligned = False

    def extra_repr(self) -> str:
        return (f"enc_channels={self.enc_channels}, dec_channels={self.dec_channels}, width={self.width}, "
                f"resolution={self.resolution!r}")

    def reference_parameters(self) -> list[nn.Parameter]:
        """The parameters :meth:`prepare_reference` uses (counted in the keyframe path's cost)."""
        return [*self.reduce_enc.parameters(), *self.reduce_dec.parameters()]

    def _reduce(self, x: Tensor, size: tuple[int, int], conv: nn.Conv2d) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, h, ceil(Hf/2), ceil(Wf/2)]``: resize to ``size``, 2×2 stride-2 conv, ReLU."""
        return F.relu(conv(_pad_even(_resize(x, size))))

    def prepare_reference(self, a_ref: Tensor, f_ref: Tensor) -> Reference:
        """Reference state from a keyframe's taps ``a_ref [B, Ca, Ha, Wa]``, ``f_ref [B, Cf, Hf, Wf]``."""
        size = (f_ref.shape[-2], f_ref.shape[-1])
        if self.resolution == "full":
            a = F.relu(self.reduce_enc(_resize(a_ref, size)))
            half = F.interpolate(a, size=_half(size), mode="bilinear", align_corners=False)
            full = torch.cat([a, F.relu(self.reduce_dec(f_ref)), f_ref], dim=1)
            return Reference(half, _to_channels_last(full) if full.device.type == "cpu" else full)
        half = torch.cat([self._reduce(a_ref, size, self.reduce_enc), self._reduce(f_ref, size, self.reduce_dec)], dim=1)
        feature = f_ref
        if f_ref.device.type == "cpu":  # the layout in which the CPU's grid_sample warps fastest
            half, feature = _to_channels_last(half), _to_channels_last(f_ref)
        if feature.untyped_storage().data_ptr() == f_ref.untyped_storage().data_ptr():
            feature = feature.clone()  # the state must not share memory with the tap (nor the teacher's output)
        return Reference(half, feature)

    def forward(self, a: Tensor, reference: Reference) -> tuple[Tensor, Tensor | None]:
        """Predict the decoder-tap feature ``[B, Cf, Hf, Wf]`` from ``a [B, Ca, Ha, Wa]``."""
        if self.resolution == "full":
            return self._forward_full(a, reference)
        ref_half, f_ref = reference
        h = self.width
        hf, wf = f_ref.shape[-2:]
        a = self._reduce(a, (hf, wf), self.reduce_enc)  # [B, h, Hf/2, Wf/2]

        # coarse alignment: one flow (half-resolution pixels) warps the reduced reference
        flow = self.flow_head(torch.cat([a, ref_half[:, :h]], dim=1))
        aligned = warp(ref_half, flow)
        a_ref, f_ref_h = aligned[:, :h], aligned[:, h:]

        fused, ref_only = self._adabd(a_ref, a, f_ref_h)

        # the correction, back at full resolution (transposed 2×2 stride-2 conv), is added
        # to the full-width reference feature warped by the same flow at full resolution
        def correction(x: Tensor) -> Tensor:
            x = F.relu(x)
            if x.device.type == "cpu":  # the CPU's transposed conv is an order of magnitude faster in channels-last
                return _to_contiguous(self.reconstruct(_to_channels_last(x)))[..., :hf, :wf]
            return self.reconstruct(x)[..., :hf, :wf]

        f_hat, aligned_only = correction(fused), (correction(ref_only) if ref_only is not None else None)
        flow_full = F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=False)[..., :hf, :wf] * 2.0
        f_warped = warp(f_ref, flow_full)  # computed last: fewer full-resolution buffers alive at once
        if torch.is_grad_enabled() or not f_hat.is_contiguous():
            f_hat = f_warped + f_hat
        else:
            f_hat.add_(f_warped)
        return f_hat, (f_warped + aligned_only if aligned_only is not None else None)

    def _adabd(self, a_ref: Tensor, a: Tensor, f_ref: Tensor) -> tuple[Tensor, Tensor | None]:
        """AdaBD: offsets and blending mask from ``[aligned a_ref, a]``, then one fused modulated deformable conv."""
        pred = self.adabd_head(torch.cat([a_ref, a], dim=1))
        k2 = self.kernel_size * self.kernel_size
        offset, mask = pred[:, : 2 * k2], torch.sigmoid(pred[:, 2 * k2 :])
        return adabd_conv(f_ref, a, offset, mask, self.weight, self.bias, reference_only=self.return_aligned)

    def _forward_full(self, a: Tensor, reference: Reference) -> tuple[Tensor, Tensor | None]:
        """``resolution="full"``: the flow at half resolution, everything else at the tap's."""
        a_ref_half, ref = reference
        h = self.width
        hf, wf = ref.shape[-2:]
        a = F.relu(self.reduce_enc(_resize(a, (hf, wf))))  # [B, h, Hf, Wf]
        a_half = F.interpolate(a, size=a_ref_half.shape[-2:], mode="bilinear", align_corners=False)
        flow = self.flow_head(torch.cat([a_half, a_ref_half], dim=1))
        flow = F.interpolate(flow, size=(hf, wf), mode="bilinear", align_corners=False)
        # half-resolution pixels -> full-resolution pixels (Python scalars: no host-to-device copy per frame)
        flow = torch.cat([flow[:, :1] * (hf / a_half.shape[-2]), flow[:, 1:] * (wf / a_half.shape[-1])], dim=1)
        aligned = warp(ref, flow)
        a_ref, f_ref, f_warped = aligned[:, :h], aligned[:, h : 2 * h], aligned[:, 2 * h :]
        fused, ref_only = self._adabd(a_ref, a, f_ref)
        f_hat = f_warped + self.reconstruct(F.relu(fused))
        aligned_only = f_warped + self.reconstruct(F.relu(ref_only)) if ref_only is not None else None
        return f_hat, aligned_only
