"""Deformable convolution v2 (modulated deformable convolution) in plain PyTorch.

The semantics follow ``torchvision.ops.deform_conv2d`` exactly, without
depending on torchvision:

* ``offset`` has shape ``[B, 2*G*kh*kw, Ho, Wo]`` where ``G`` is the number of
  *offset groups* (inferred from the channel count).  For offset group ``g``
  and kernel tap ``k = i*kw + j`` (row-major), channel ``g*2*K + 2*k`` holds the
  vertical displacement ``dy`` and channel ``g*2*K + 2*k + 1`` the horizontal
  displacement ``dx`` (``K = kh*kw``).  Input channels are split into ``G``
  contiguous blocks; block ``g`` uses the offsets (and mask) of group ``g``.
* ``mask`` (optional) has shape ``[B, G*kh*kw, Ho, Wo]``; channel ``g*K + k``
  multiplies every sample taken for tap ``k`` of offset group ``g``.
* For output pixel ``(oy, ox)`` and tap ``(i, j)`` the sampling position is::

      y = oy*stride_h - pad_h + i*dil_h + dy
      x = ox*stride_w - pad_w + j*dil_w + dx

  and the input is read with bilinear interpolation in which every one of the
  four neighbouring pixels lying outside the image contributes zero.  (In
  particular a sample with ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W``
  is exactly zero.)

Implementation: all bilinear samples are gathered with a single call to
:func:`torch.nn.functional.grid_sample` (``align_corners=False``,
``padding_mode="zeros"``, which has precisely the zero-corner rule above),
modulated by the mask, laid out as "columns" ``[B, Cin, K, Ho*Wo]`` and
contracted with the flattened weight in one batched matmul.  The two stages are
exposed separately (:func:`deform_columns` / :func:`unfold_columns` and
:func:`columns_matmul`) so that callers can fuse several applications of the
same weight into one matmul.

Everything is differentiable w.r.t. input, offset, mask, weight and bias, and
works for any floating dtype on any device. Sampling positions are always computed in
float32 or wider (:func:`sampling_dtype`): columns of a bfloat16 or float16 input are
interpolated in float32 and returned in the input's dtype, and offsets or masks of another
floating dtype (as ``torch.autocast`` produces) are accepted.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "deform_conv2d",
    "deform_columns",
    "unfold_columns",
    "columns_matmul",
    "conv_output_size",
    "DeformConv2d",
    "warp_reference",
    "sampling_dtype",
]

IntPair = Union[int, Tuple[int, int]]


# --------------------------------------------------------------------------- #
# Argument helpers
# --------------------------------------------------------------------------- #
def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    """Normalise an int-or-pair argument to a tuple of two Python ints."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    try:
        items = tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (items[0], items[1])


def _conv_params(
    kernel_size: IntPair, stride: IntPair, padding: IntPair, dilation: IntPair
) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
    ks = _pair(kernel_size, "kernel_size")
    st = _pair(stride, "stride")
    pd = _pair(padding, "padding")
    dl = _pair(dilation, "dilation")
    if min(ks) < 1:
        raise ValueError(f"kernel_size must be positive, got {ks}")
    if min(st) < 1:
        raise ValueError(f"stride must be positive, got {st}")
    if min(pd) < 0:
        raise ValueError(f"padding must be non-negative, got {pd}")
    if min(dl) < 1:
        raise ValueError(f"dilation must be positive, got {dl}")
    return ks, st, pd, dl


def _check_4d(t: Tensor, name: str, layout: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-D tensor {layout}, got shape {tuple(t.shape)}"
        )


def conv_output_size(
    in_hw: Tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Tuple[int, int]:
    """Spatial output size ``(Ho, Wo)`` of a convolution (same formula as ``nn.Conv2d``).

    ``Ho = (H + 2*pad_h - dil_h*(kh - 1) - 1) // stride_h + 1`` and likewise for ``Wo``.
    Raises ``ValueError`` if the result is not positive.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv_params(kernel_size, stride, padding, dilation)
    h, w = int(in_hw[0]), int(in_hw[1])
    eff_h = h + 2 * ph - dh * (kh - 1) - 1
    eff_w = w + 2 * pw - dw * (kw - 1) - 1
    if eff_h < 0 or eff_w < 0:
        raise ValueError(
            f"input spatial size {(h, w)} is too small for kernel_size {(kh, kw)} with "
            f"padding {(ph, pw)} and dilation {(dh, dw)}: the output would be empty"
        )
    return (eff_h // sh + 1, eff_w // sw + 1)


# --------------------------------------------------------------------------- #
# Columns
# --------------------------------------------------------------------------- #
def unfold_columns(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> Tensor:
    """Regular (zero-offset, unmodulated) convolution columns via ``F.unfold``.

    Args:
        input: ``[B, Cin, H, W]``.
        kernel_size, stride, padding, dilation: int or ``(h, w)`` pair.

    Returns:
        ``[B, Cin, K, Ho*Wo]`` with ``K = kh*kw``; entry ``[b, c, i*kw + j, oy*Wo + ox]``
        is ``input[b, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw]`` (zero outside the
        image).  Identical to :func:`deform_columns` with an all-zero offset and no mask.
    """
    _check_4d(input, "input", "[B, Cin, H, W]")
    (kh, kw), st, pd, dl = _conv_params(kernel_size, stride, padding, dilation)
    b, c, h, w = input.shape
    ho, wo = conv_output_size((h, w), (kh, kw), st, pd, dl)
    cols = F.unfold(input, (kh, kw), dilation=dl, padding=pd, stride=st)
    return cols.view(b, c, kh * kw, ho * wo)


def sampling_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype in which sampling positions are computed: float64 if any of ``tensors`` is,
    else float32. Pixel positions in bfloat16 (8 significant bits) or float16 are off by up to
    a pixel on maps a few hundred pixels wide, so low-precision tensors are sampled at float32
    positions (and their values interpolated in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _normalise(pos: Tensor, size: int | Tensor) -> Tensor:
    """Pixel coordinate -> ``grid_sample``'s normalised coordinate (``align_corners=False``)."""
    return (2.0 * pos + 1.0) / size - 1.0  # the exact inverse of grid_sample's ((g + 1)·size − 1) / 2


def deform_columns(
    input: Tensor,
    offset: Tensor,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Sampled (and optionally modulated) deformable-convolution columns.

    Args:
        input: ``[B, Cin, H, W]``.
        offset: ``[B, 2*G*kh*kw, Ho, Wo]``; ``G`` (offset groups) is inferred and must
            divide ``Cin``.  Channel ``g*2*K + 2*k`` is ``dy``, ``g*2*K + 2*k + 1`` is
            ``dx`` for tap ``k = i*kw + j``.
        kernel_size, stride, padding, dilation: int or ``(h, w)`` pair.
        mask: optional ``[B, G*kh*kw, Ho, Wo]``; channel ``g*K + k`` scales the samples
            of tap ``k`` in offset group ``g``.

    Returns:
        ``[B, Cin, K, Ho*Wo]``: entry ``[b, c, k, oy*Wo + ox]`` is the bilinear sample of
        channel ``c`` at the deformed position of tap ``k`` for output pixel
        ``(oy, ox)``, times the mask.  Index ``(c, k)`` pairs with
        ``weight[:, c, i, j]`` (for ``groups == 1``).

    The bilinear sampling is a single ``F.grid_sample`` call on the input viewed as
    ``[B*G, Cin/G, H, W]`` with a grid ``[B*G, K*Ho, Wo, 2]``.
    """
    _check_4d(input, "input", "[B, Cin, H, W]")
    _check_4d(offset, "offset", "[B, 2*G*kh*kw, Ho, Wo]")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _conv_params(kernel_size, stride, padding, dilation)
    b, c, h, w = input.shape
    ho, wo = conv_output_size((h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    k = kh * kw

    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if not offset.is_floating_point():
        raise TypeError(f"offset must be a floating-point tensor, got dtype {offset.dtype}")

    n_off = offset.shape[1]
    g = n_off // (2 * k)
    if n_off == 0 or n_off % (2 * k) != 0:
        raise ValueError(
            f"offset must have 2*G*kh*kw channels (a positive multiple of "
            f"2*{kh}*{kw} = {2 * k}), got offset of shape {tuple(offset.shape)}"
        )
    expected_offset = (b, 2 * g * k, ho, wo)
    if tuple(offset.shape) != expected_offset:
        raise ValueError(
            f"offset must have shape [B, 2*G*kh*kw, Ho, Wo] = {expected_offset} "
            f"(batch of input and conv output size {(ho, wo)}), got {tuple(offset.shape)}"
        )
    if c % g != 0:
        raise ValueError(
            f"input channels Cin={c} must be divisible by the number of offset groups "
            f"G={g} (inferred from offset of shape {tuple(offset.shape)})"
        )
    if mask is not None:
        _check_4d(mask, "mask", "[B, G*kh*kw, Ho, Wo]")
        expected_mask = (b, g * k, ho, wo)
        if tuple(mask.shape) != expected_mask:
            raise ValueError(
                f"mask must have shape [B, G*kh*kw, Ho, Wo] = {expected_mask}, "
                f"got {tuple(mask.shape)}"
            )
        if not mask.is_floating_point():
            raise TypeError(f"mask must be a floating-point tensor, got dtype {mask.dtype}")

    dtype, device = sampling_dtype(input, offset), input.device
    # Undeformed sampling positions of every tap, in pixel units.
    tap_i = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw)  # [K]
    tap_j = torch.arange(kw, device=device, dtype=dtype).repeat(kh)  # [K]
    base_y = (torch.arange(ho, device=device, dtype=dtype) * sh - ph).view(1, ho, 1) + (
        tap_i * dh
    ).view(k, 1, 1)  # [K, Ho, 1]
    base_x = (torch.arange(wo, device=device, dtype=dtype) * sw - pw).view(1, 1, wo) + (
        tap_j * dw
    ).view(k, 1, 1)  # [K, 1, Wo]

    off = offset.reshape(b, g, k, 2, ho, wo)
    y = base_y + off[:, :, :, 0]  # [B, G, K, Ho, Wo]
    x = base_x + off[:, :, :, 1]
    # pixel -> normalised coordinates (valid for W == 1 too)
    gx = _normalise(x, w)
    gy = _normalise(y, h)
    grid = torch.stack((gx, gy), dim=-1).view(b * g, k * ho, wo, 2)

    # one offset group on CPU: sample from channels-last memory, where grid_sample reads
    # whole channel vectors per position (faster on CPU; same values)
    if g == 1 and input.device.type == "cpu":
        source = input.contiguous(memory_format=torch.channels_last)
    else:
        source = input.reshape(b * g, c // g, h, w)
    sampled = F.grid_sample(
        source.to(dtype),  # low-precision values are sampled at float32 positions
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # [B*G, Cin/G, K*Ho, Wo]
    if mask is None:
        return sampled.view(b, c, k, ho * wo).to(input.dtype)
    sampled = sampled.view(b, g, c // g, k, ho * wo) * mask.reshape(b, g, 1, k, ho * wo).to(dtype)
    return sampled.view(b, c, k, ho * wo).to(input.dtype)


def columns_matmul(
    columns: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    groups: int = 1,
    out_hw: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Contract convolution columns with a conv weight (one batched matmul).

    Args:
        columns: ``[B, Cin, K, P]`` as produced by :func:`deform_columns` /
            :func:`unfold_columns` (``K = kh*kw``, ``P = Ho*Wo``).
        weight: ``[Cout, Cin/groups, kh, kw]``.
        bias: optional ``[Cout]``.
        groups: convolution groups; must divide ``Cin`` and ``Cout``.
        out_hw: ``(Ho, Wo)`` with ``Ho*Wo == P`` (required).

    Returns:
        ``[B, Cout, Ho, Wo]``.
    """
    if not isinstance(columns, Tensor) or columns.dim() != 4:
        shape = tuple(columns.shape) if isinstance(columns, Tensor) else type(columns).__name__
        raise ValueError(f"columns must be a 4-D tensor [B, Cin, K, P], got {shape}")
    _check_4d(weight, "weight", "[Cout, Cin/groups, kh, kw]")
    if out_hw is None:
        raise ValueError("out_hw=(Ho, Wo) is required to reshape the output")
    ho, wo = int(out_hw[0]), int(out_hw[1])
    b, c, k, p = columns.shape
    cout, cin_g, kh, kw = weight.shape
    if groups < 1:
        raise ValueError(f"groups must be positive, got {groups}")
    if p != ho * wo:
        raise ValueError(
            f"columns has P={p} positions but out_hw={(ho, wo)} has {ho * wo}"
        )
    if k != kh * kw:
        raise ValueError(
            f"columns has K={k} kernel taps but weight of shape {tuple(weight.shape)} "
            f"has kh*kw={kh * kw}"
        )
    if c % groups != 0 or cout % groups != 0:
        raise ValueError(
            f"groups={groups} must divide both Cin={c} and Cout={cout}"
        )
    if cin_g * groups != c:
        raise ValueError(
            f"weight must have shape [Cout, Cin/groups, kh, kw] = "
            f"{(cout, c // groups, kh, kw)} for Cin={c}, groups={groups}; "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"bias must have shape [Cout] = {(cout,)}, got {tuple(bias.shape)}")

    cols = columns.reshape(b, groups, cin_g * k, p)
    w2 = weight.reshape(groups, cout // groups, cin_g * k)
    # expand (a view) rather than broadcast: fvcore's matmul handle ignores broadcast batch dims
    out = torch.matmul(w2.expand(b, groups, cout // groups, cin_g * k), cols)  # [B, groups, Cout/groups, P]
    out = out.reshape(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, cout, 1, 1)
    return out


# --------------------------------------------------------------------------- #
# Warping
# --------------------------------------------------------------------------- #
def warp_reference(input: Tensor, flow: Tensor) -> Tensor:
    """Backward warp with bilinear sampling: ``out[b, :, y, x] = input[b, :, y + dy, x + dx]``,
    in plain PyTorch (the reference of :func:`~shortcutify.ops.warp`, which has a GPU fast path).

    Args:
        input: ``[B, C, H, W]``, any memory format (channels-last is faster on CPU:
            ``grid_sample`` then reads whole channel vectors).
        flow: ``[B, 2, H, W]`` displacements in pixels, channel 0 ``dy``, channel 1 ``dx``
            (any floating dtype; positions are computed in :func:`sampling_dtype`).

    Returns:
        ``[B, C, H, W]`` as ``grid_sample`` returns it (contiguous on CPU, whatever ``input``'s
        memory format); samples outside the image read zeros
        (the same rule as :func:`deform_columns`, of which this is the ``k = 1`` case).
    """
    _check_4d(input, "input", "[B, C, H, W]")
    _check_4d(flow, "flow", "[B, 2, H, W]")
    b, _, h, w = input.shape
    if tuple(flow.shape) != (b, 2, h, w):
        raise ValueError(f"flow must have shape [B, 2, H, W] = {(b, 2, h, w)}, got {tuple(flow.shape)}")
    dtype = sampling_dtype(input, flow)
    flow = flow.to(dtype)
    if torch.compiler.is_compiling() or _capturing(input):  # compiled code fuses this, symbolic sizes included
        ys = torch.arange(h, device=input.device, dtype=dtype).view(1, h, 1)
        xs = torch.arange(w, device=input.device, dtype=dtype).view(1, 1, w)
        grid = torch.stack((_normalise(xs + flow[:, 1], w), _normalise(ys + flow[:, 0], h)), dim=-1)
    else:  # eager: the same arithmetic in six kernels instead of thirteen (a launch-bound GPU pays per kernel)
        positions, sizes = _pixel_grid(h, w, input.device, dtype)
        grid = _normalise(positions + flow.flip(1).permute(0, 2, 3, 1), sizes)
    out = F.grid_sample(input.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(input.dtype)


def _capturing(t: Tensor) -> bool:
    """A CUDA graph is being captured on the current stream (no host-to-device copies then)."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


@functools.lru_cache(maxsize=8)  # (frame size, device, dtype) combinations: a few streams' worth
def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Every pixel's ``(x, y)``, ``[1, H, W, 2]``, and the map's ``(W, H)``, ``[2]``, kept for
    the most recent sizes (read-only tensors shared between eager calls)."""
    with torch.inference_mode(False):  # cached: a tensor made in inference mode could never be saved for backward
        xs = torch.arange(w, dtype=dtype).view(1, w).expand(h, w)
        ys = torch.arange(h, dtype=dtype).view(h, 1).expand(h, w)
        return torch.stack((xs, ys), dim=-1).unsqueeze(0).to(device), torch.tensor([w, h], dtype=dtype).to(device)


# --------------------------------------------------------------------------- #
# Functional and module API
# --------------------------------------------------------------------------- #
def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Modulated deformable 2-D convolution (DCNv2), torchvision semantics.

    Args:
        input: ``[B, Cin, H, W]``.
        offset: ``[B, 2*G*kh*kw, Ho, Wo]``, interleaved ``(dy, dx)`` per tap, taps
            row-major, per offset group ``G`` (inferred; must divide ``Cin``).
        weight: ``[Cout, Cin/groups, kh, kw]``; ``groups = Cin // weight.shape[1]``.
        bias: optional ``[Cout]``.
        stride, padding, dilation: int or ``(h, w)`` pair.
        mask: optional ``[B, G*kh*kw, Ho, Wo]`` modulation scalars.

    Returns:
        ``[B, Cout, Ho, Wo]``.
    """
    _check_4d(input, "input", "[B, Cin, H, W]")
    _check_4d(weight, "weight", "[Cout, Cin/groups, kh, kw]")
    c = input.shape[1]
    cout, cin_g, kh, kw = weight.shape
    if cin_g == 0 or c % cin_g != 0:
        raise ValueError(
            f"weight.shape[1] (Cin/groups) = {cin_g} must divide input channels Cin={c}; "
            f"weight shape {tuple(weight.shape)}, input shape {tuple(input.shape)}"
        )
    groups = c // cin_g
    if cout % groups != 0:
        raise ValueError(
            f"Cout={cout} (weight.shape[0]) must be divisible by groups={groups} "
            f"(= Cin {c} / weight.shape[1] {cin_g})"
        )
    cols = deform_columns(input, offset, (kh, kw), stride, padding, dilation, mask)
    ho, wo = offset.shape[-2:]
    return columns_matmul(cols, weight, bias, groups=groups, out_hw=(int(ho), int(wo)))


class DeformConv2d(nn.Module):
    """Deformable convolution v2 layer; offsets (and mask) are passed to ``forward``.

    Weight ``[out_channels, in_channels/groups, kh, kw]`` and bias ``[out_channels]``
    are initialised like ``nn.Conv2d`` (kaiming-uniform with ``a=sqrt(5)``, i.e.
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; bias with the same bound).

    ``forward(x [B, Cin, H, W], offset [B, 2*G*kh*kw, Ho, Wo], mask [B, G*kh*kw, Ho, Wo]
    | None) -> [B, Cout, Ho, Wo]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups must be positive, got {groups}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels={out_channels} must be divisible by groups={groups}")
        ks, st, pd, dl = _conv_params(kernel_size, stride, padding, dilation)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ks
        self.stride = st
        self.padding = pd
        self.dilation = dl
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *ks))
        if bias:
            self.bias: Optional[nn.Parameter] = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform fan-in initialisation, as in ``nn.Conv2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, offset: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x [B, Cin, H, W]``, ``offset [B, 2*G*kh*kw, Ho, Wo]``, optional
        ``mask [B, G*kh*kw, Ho, Wo]`` -> ``[B, Cout, Ho, Wo]``."""
        if x.dim() == 4 and x.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have {self.in_channels} channels, got shape {tuple(x.shape)}"
            )
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
