"""Backward warping (plus an optional residual) as one Triton kernel (the GPU fast path of
:func:`~shortcutify.ops.warp`).

One program takes a tile of pixels of one sample and a tile of channels: it reads the flow
once per pixel, computes the sampling position, the four corners and their bilinear weights
in float32 (zero outside the map: :func:`~shortcutify.ops.deform.warp_reference`'s rule),
and for every channel of the tile gathers the corners, interpolates in float32, adds the
residual and writes the result once. Channels are the tile's slow axis and pixels its fast
one, so that neighbouring threads read neighbouring pixels of a ``[B, C, H, W]`` map.

Import needs ``triton`` (the ``gpu`` extra). Runs on CUDA tensors, and on CPU tensors under
Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which is
how the tests check it against the reference without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .adabd_triton import SUPPORTED_DTYPES, bilinear_corners, multiprocessors, pixel_tile

__all__ = ["warp_triton", "default_warp_tiles"]

# frame sizes and the strides they set vary between streams: one compiled kernel for all of them
_SIZE_ARGS = ["C", "H", "W"] + [f"s_{t}{d}" for t in "ifro" for d in "bcyx"]


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _warp_kernel(
    in_ptr, flow_ptr, res_ptr, out_ptr,
    C, H, W,
    s_ib, s_ic, s_iy, s_ix,
    s_fb, s_fc, s_fy, s_fx,
    s_rb, s_rc, s_ry, s_rx,
    s_ob, s_oc, s_oy, s_ox,
    HAS_RES: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    y, x, in_img = pixel_tile(BLOCK_P, H, W)
    f = flow_ptr + b * s_fb + y * s_fy + x * s_fx
    dy = tl.load(f, mask=in_img, other=0.0).to(tl.float32)
    dx = tl.load(f + s_fc, mask=in_img, other=0.0).to(tl.float32)
    py = y.to(tl.float32) + dy
    px = x.to(tl.float32) + dx
    y0, x0, y1, x1, fy, fx, ok_y0, ok_y1, ok_x0, ok_x1 = bilinear_corners(py, px, H, W, in_img)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = (c < C)[:, None]
    src = in_ptr + b * s_ib + c[:, None] * s_ic  # [BLOCK_C, 1]: channels slow, pixels fast
    v00 = tl.load(src + (y0 * s_iy + x0 * s_ix)[None, :], mask=c_ok & (ok_y0 & ok_x0)[None, :], other=0.0).to(tl.float32)
    v01 = tl.load(src + (y0 * s_iy + x1 * s_ix)[None, :], mask=c_ok & (ok_y0 & ok_x1)[None, :], other=0.0).to(tl.float32)
    v10 = tl.load(src + (y1 * s_iy + x0 * s_ix)[None, :], mask=c_ok & (ok_y1 & ok_x0)[None, :], other=0.0).to(tl.float32)
    v11 = tl.load(src + (y1 * s_iy + x1 * s_ix)[None, :], mask=c_ok & (ok_y1 & ok_x1)[None, :], other=0.0).to(tl.float32)
    top = v00 + fx[None, :] * (v01 - v00)
    bottom = v10 + fx[None, :] * (v11 - v10)
    val = top + fy[None, :] * (bottom - top)
    ok = c_ok & in_img[None, :]
    if HAS_RES:
        res = tl.load(res_ptr + b * s_rb + c[:, None] * s_rc + (y * s_ry + x * s_rx)[None, :], mask=ok, other=0.0)
        val += res.to(tl.float32)
    tl.store(out_ptr + b * s_ob + c[:, None] * s_oc + (y * s_oy + x * s_ox)[None, :], val.to(out_ptr.dtype.element_ty), mask=ok)


def default_warp_tiles(batch: int, channels: int, pixels: int, processors: int) -> tuple[int, int, int]:
    """The launch's ``(BLOCK_P, BLOCK_C, num_warps)`` for ``batch`` maps of ``channels`` ×
    ``pixels`` on a GPU of ``processors`` streaming multiprocessors: channel tiles of up to 4,
    and the largest pixel tile of 512, 256, 128, 64, 32 that still launches at least two
    programs per multiprocessor (powers of two). Long, narrow tiles: ``benchmarks/gpu.py``'s
    sweeps measured them fastest, and wide channel tiles several times slower."""
    block_c = max(1, min(4, triton.next_power_of_2(max(1, channels))))
    per_tile = batch * triton.cdiv(channels, block_c)
    block_p = next((p for p in (512, 256, 128, 64) if triton.cdiv(pixels, p) * per_tile >= 2 * processors), 32)
    return block_p, block_c, 4


def warp_triton(input: Tensor, flow: Tensor, residual: Tensor | None = None, tiles: tuple[int, int, int] | None = None) -> Tensor:
    """``warp_reference(input, flow) (+ residual)`` in one Triton kernel (forward only).

    ``input`` ``[B, C, H, W]`` and ``residual`` (same shape) have dtypes of
    :data:`~shortcutify.ops.adabd_triton.SUPPORTED_DTYPES`; ``flow`` ``[B, 2, H, W]`` (dy, dx in
    pixels) may be any floating dtype. Positions and interpolation are float32, the sum is
    rounded once to the promoted dtype of input and residual (the input's without one). The
    result is contiguous ``[B, C, H, W]``. ``tiles``
    overrides :func:`default_warp_tiles` (``(BLOCK_P, BLOCK_C, num_warps)``, powers of two), for
    benchmarks.

    Raises:
        TypeError: a dtype the kernel does not take.
        ValueError: shapes that do not fit together.
    """
    if input.dtype not in SUPPORTED_DTYPES or (residual is not None and residual.dtype not in SUPPORTED_DTYPES) or not flow.is_floating_point():
        raise TypeError(
            f"warp_triton takes input (and residual) of dtypes among {SUPPORTED_DTYPES} and a floating flow, got "
            f"{input.dtype}, {None if residual is None else residual.dtype}, {flow.dtype}; use shortcutify.ops.warp, which falls back"
        )
    if input.dim() != 4:
        raise ValueError(f"warp_triton needs input [B, C, H, W], got shape {tuple(input.shape)}")
    b, c, h, w = input.shape
    if tuple(flow.shape) != (b, 2, h, w) or (residual is not None and residual.shape != input.shape):
        raise ValueError(
            f"flow must be {(b, 2, h, w)} and residual {tuple(input.shape)}; got {tuple(flow.shape)}, "
            f"{None if residual is None else tuple(residual.shape)}"
        )
    dtype = input.dtype if residual is None else torch.promote_types(input.dtype, residual.dtype)
    out = torch.empty((b, c, h, w), device=input.device, dtype=dtype)
    block_p, block_c, warps = tiles if tiles is not None else default_warp_tiles(b, c, h * w, multiprocessors(input.device))
    if any(t < 1 or t & (t - 1) for t in (block_p, block_c, warps)):
        raise ValueError(f"tiles must be powers of two; got {tiles}")
    if out.numel():
        res = residual if residual is not None else out  # any pointer when HAS_RES is off
        grid = (triton.cdiv(h * w, block_p), b, triton.cdiv(c, block_c))
        _warp_kernel[grid](
            input, flow, res, out,
            c, h, w,
            *input.stride(), *flow.stride(), *res.stride(), *out.stride(),
            HAS_RES=residual is not None, BLOCK_P=block_p, BLOCK_C=block_c,
            num_warps=warps,
        )
    return out
