"""AdaBD's fused blend-and-deform convolution as one Triton kernel (the GPU fast path).

One program computes a tile of output pixels of one sample for a tile of output channels.
Per kernel tap it reads the tap's offset and blending mask, samples the reference feature
bilinearly at the deformed position (the four corners, zero outside the map, exactly
:func:`~shortcutify.ops.deform_columns`' rule), reads the current feature at the regular
position, blends the two in registers and multiplies the blend with the tap's weights on
the tensor cores (``tl.dot``): the ``[B, h, k², H·W]`` columns of the reference path are never
written to memory. Sampling positions are float32; products accumulate in float32.

Import needs ``triton`` (the ``gpu`` extra). Runs on CUDA tensors, and on CPU tensors under
Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which is
how the tests check it against the reference without a GPU.
"""

from __future__ import annotations

from typing import Literal

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["adabd_conv_triton", "default_tiles", "multiprocessors", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# frame sizes and the strides they set vary between streams: one compiled kernel for all of them
_SIZE_ARGS = ["H", "W"] + [f"s_{t}{d}" for t in "rcomy" for d in "bcyx"]


@triton.jit
def pixel_tile(BLOCK_P: tl.constexpr, H, W):
    """The rows ``y``, columns ``x`` and in-map flags of program axis 0's tile of ``BLOCK_P``
    pixels of an ``H``×``W`` map (row-major), shared by both kernels."""
    pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    return pix // W, pix % W, pix < H * W


@triton.jit
def bilinear_corners(py, px, H, W, in_img):
    """For sampling positions ``(py, px)`` (float32 pixels) on an ``H``×``W`` map: the four
    corners' rows ``y0, y1`` and columns ``x0, x1`` (int32), the bilinear fractions ``fy, fx``,
    and whether each row and column lies inside the map (rows also need ``in_img``): the
    zero-outside rule of :func:`~shortcutify.ops.deform_columns`, shared by both kernels."""
    y0f = tl.floor(py)
    x0f = tl.floor(px)
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    y1 = y0 + 1
    x1 = x0 + 1
    ok_y0 = in_img & (y0 >= 0) & (y0 < H)
    ok_y1 = in_img & (y1 >= 0) & (y1 < H)
    ok_x0 = (x0 >= 0) & (x0 < W)
    ok_x1 = (x1 >= 0) & (x1 < W)
    return y0, x0, y1, x1, py - y0f, px - x0f, ok_y0, ok_y1, ok_x0, ok_x1


@triton.jit
def _split_dot(a, w, acc, DOT_F32: tl.constexpr):
    """``acc + a @ w`` for float32 ``a``, ``w`` from bfloat16 halves, ``x = hi + lo``: ``hi·hi +
    lo·hi + hi·lo`` (``lo·lo``, below float32's precision, is dropped). Three bfloat16 products on
    the tensor cores, accurate to about 2^-16 relative: better than TF32's 2^-11."""
    a = a.to(tl.float32)
    w = w.to(tl.float32)
    a_hi = a.to(tl.bfloat16)
    a_lo = (a - a_hi.to(tl.float32)).to(tl.bfloat16)
    w_hi = w.to(tl.bfloat16)
    w_lo = (w - w_hi.to(tl.float32)).to(tl.bfloat16)
    if DOT_F32:  # the interpreter: bfloat16 values, widened (their products are exact in float32)
        acc = tl.dot(a_lo.to(tl.float32), w_hi.to(tl.float32), acc, input_precision="ieee")
        acc = tl.dot(a_hi.to(tl.float32), w_lo.to(tl.float32), acc, input_precision="ieee")
        acc = tl.dot(a_hi.to(tl.float32), w_hi.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a_lo, w_hi, acc)
        acc = tl.dot(a_hi, w_lo, acc)
        acc = tl.dot(a_hi, w_hi, acc)
    return acc


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _adabd_kernel(
    ref_ptr, cur_ptr, off_ptr, msk_ptr, w_ptr, bias_ptr, out_ptr, rout_ptr,
    C, H, W, O,
    s_rb, s_rc, s_ry, s_rx,
    s_cb, s_cc, s_cy, s_cx,
    s_ob, s_oc, s_oy, s_ox,
    s_mb, s_mc, s_my, s_mx,
    s_wo, s_wc, s_wt,
    s_yb, s_yc, s_yy, s_yx,
    KS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    REF_ONLY: tl.constexpr,
    PRECISION: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_O: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    pid_o = tl.program_id(2)
    y, x, in_img = pixel_tile(BLOCK_P, H, W)
    o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < O
    acc = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    acc_ref = tl.zeros((BLOCK_P, BLOCK_O), dtype=tl.float32)
    PAD = KS // 2
    for t in range(KS * KS):  # a loop, not unrolled: unrolled, float32 took minutes to compile
        ti = t // KS
        tj = t % KS
        dy = tl.load(off_ptr + b * s_ob + (2 * t) * s_oc + y * s_oy + x * s_ox, mask=in_img, other=0.0).to(tl.float32)
        dx = tl.load(off_ptr + b * s_ob + (2 * t + 1) * s_oc + y * s_oy + x * s_ox, mask=in_img, other=0.0).to(tl.float32)
        m = tl.load(msk_ptr + b * s_mb + t * s_mc + y * s_my + x * s_mx, mask=in_img, other=0.0).to(tl.float32)
        # the deformed position in pixels, its top-left corner and bilinear fractions
        py = (y + (ti - PAD)).to(tl.float32) + dy
        px = (x + (tj - PAD)).to(tl.float32) + dx
        y0, x0, y1, x1, fy, fx, ok_y0, ok_y1, ok_x0, ok_x1 = bilinear_corners(py, px, H, W, in_img)
        w00 = (1.0 - fy) * (1.0 - fx)
        w01 = (1.0 - fy) * fx
        w10 = fy * (1.0 - fx)
        w11 = fy * fx
        # the current feature at the tap's regular position (zero padding)
        cy = y + (ti - PAD)
        cx = x + (tj - PAD)
        ok_c = in_img & (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = (c < C)[None, :]
            ref_c = ref_ptr + b * s_rb + c[None, :] * s_rc
            v00 = tl.load(ref_c + (y0 * s_ry + x0 * s_rx)[:, None], mask=(ok_y0 & ok_x0)[:, None] & c_ok, other=0.0)
            v01 = tl.load(ref_c + (y0 * s_ry + x1 * s_rx)[:, None], mask=(ok_y0 & ok_x1)[:, None] & c_ok, other=0.0)
            v10 = tl.load(ref_c + (y1 * s_ry + x0 * s_rx)[:, None], mask=(ok_y1 & ok_x0)[:, None] & c_ok, other=0.0)
            v11 = tl.load(ref_c + (y1 * s_ry + x1 * s_rx)[:, None], mask=(ok_y1 & ok_x1)[:, None] & c_ok, other=0.0)
            sampled = (
                v00.to(tl.float32) * w00[:, None]
                + v01.to(tl.float32) * w01[:, None]
                + v10.to(tl.float32) * w10[:, None]
                + v11.to(tl.float32) * w11[:, None]
            )
            cur = tl.load(
                cur_ptr + b * s_cb + c[None, :] * s_cc + (cy * s_cy + cx * s_cx)[:, None], mask=ok_c[:, None] & c_ok, other=0.0
            ).to(tl.float32)
            blended = sampled + m[:, None] * (cur - sampled)  # (1 − m)·ref + m·cur, as torch.lerp
            wt = tl.load(
                w_ptr + o[None, :] * s_wo + c[:, None] * s_wc + t * s_wt, mask=(c < C)[:, None] & o_ok[None, :], other=0.0
            )  # [BLOCK_C, BLOCK_O]
            if SPLIT:  # float32 as bfloat16 pairs, three products (see adabd_conv_triton)
                acc = _split_dot(blended, wt, acc, DOT_F32)
                if REF_ONLY:
                    acc_ref = _split_dot(sampled, wt, acc_ref, DOT_F32)
            else:
                if DOT_F32:  # the interpreter: widen (see adabd_conv_triton)
                    wt = wt.to(tl.float32)
                acc = tl.dot(blended.to(wt.dtype), wt, acc, input_precision=PRECISION)
                if REF_ONLY:
                    acc_ref = tl.dot(sampled.to(wt.dtype), wt, acc_ref, input_precision=PRECISION)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + o, mask=o_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
        acc_ref += bias[None, :]
    dst = b * s_yb + o[None, :] * s_yc + (y * s_yy + x * s_yx)[:, None]
    ok = in_img[:, None] & o_ok[None, :]
    tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty), mask=ok)
    if REF_ONLY:
        tl.store(rout_ptr + dst, acc_ref.to(rout_ptr.dtype.element_ty), mask=ok)


def _pow2(n: int, low: int, high: int) -> int:
    return max(low, min(high, triton.next_power_of_2(max(1, n))))


_PROCESSORS: dict[int, int] = {}


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (read once); 1 elsewhere (the interpreter)."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _PROCESSORS:
        _PROCESSORS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _PROCESSORS[index]


def default_tiles(
    batch: int, channels: int, out_channels: int, pixels: int, processors: int, element_bytes: int = 2
) -> tuple[int, int, int, int]:
    """The launch's ``(BLOCK_P, BLOCK_C, BLOCK_O, num_warps)``: a tile of output pixels, the
    input-channel step of the inner product and the output-channel tile (powers of two, at
    least 16 for ``tl.dot``), for ``batch`` maps of ``pixels`` pixels of ``element_bytes``-byte
    values on a GPU of ``processors`` streaming multiprocessors.

    The pixel tile is the largest of 128, 64, 32 that still launches at least half as many
    programs as the GPU has multiprocessors: large tiles amortise the weight loads on large
    maps, small maps need small tiles to fill the GPU. The channel step is 32, 16 for 4-byte
    values (fewer registers spilled). Both chosen from ``benchmarks/gpu.py``'s sweeps.
    """
    block_c, block_o = _pow2(channels, 16, 32 if element_bytes < 4 else 16), _pow2(out_channels, 16, 128)
    per_tile = batch * triton.cdiv(out_channels, block_o)
    block_p = next((p for p in (128, 64) if triton.cdiv(pixels, p) * per_tile * 2 >= processors), 32)
    return block_p, block_c, block_o, 4


def adabd_conv_triton(
    f_ref: Tensor,
    a: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    reference_only: bool = False,
    tiles: tuple[int, int, int, int] | None = None,
    num_stages: int | None = None,
    fp32_products: Literal["ieee", "tf32", "bf16x3"] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`~shortcutify.ops.adabd_conv` in one Triton kernel (forward only, no autograd).

    Same arguments and result as the reference; ``f_ref``, ``a`` and ``weight`` share one
    dtype of :data:`SUPPORTED_DTYPES` (offsets and mask may be any floating dtype); the
    output is contiguous ``[B, h_out, H, W]`` in that dtype. Float32 operands are multiplied
    in IEEE float32 unless ``torch.backends.cudnn.allow_tf32`` is set (as PyTorch's
    convolutions do; on by default): then, on CUDA, each operand is split into two bfloat16
    halves and three bfloat16 products are summed (``"bf16x3"``: about 2^-16 relative error,
    more accurate than the TF32 the flag allows, 2^-11). ``fp32_products`` (``"ieee"``,
    ``"tf32"``, ``"bf16x3"``) overrides that choice, for benchmarks. ``tiles`` overrides
    :func:`default_tiles` (``(BLOCK_P, BLOCK_C, BLOCK_O, num_warps)``, powers of two, the first
    three at least 16) and ``num_stages`` Triton's software-pipelining depth of the channel loop,
    for benchmarks. By default float32 runs one stage: Triton pipelines 4-byte gathers through
    shared memory, and its default three stages take most of a multiprocessor's, leaving one
    program per multiprocessor for a kernel that waits on gathers (``python benchmarks/gpu.py --resources``);
    2-byte dtypes keep Triton's default.

    Raises:
        TypeError: a dtype the kernel does not take, or dtypes that differ.
        ValueError: shapes that do not fit together.
    """
    dtype = f_ref.dtype
    if dtype not in SUPPORTED_DTYPES or a.dtype != dtype or weight.dtype != dtype:
        raise TypeError(
            f"adabd_conv_triton takes f_ref, a and weight of one dtype among {SUPPORTED_DTYPES}, got "
            f"{f_ref.dtype}, {a.dtype}, {weight.dtype}; use shortcutify.ops.adabd_conv, which casts and falls back"
        )
    b, c, hh, ww = a.shape
    o, cw, ks, ks2 = weight.shape
    if ks != ks2 or ks % 2 != 1 or cw != c or tuple(f_ref.shape) != (b, c, hh, ww):
        raise ValueError(
            f"adabd_conv_triton needs f_ref and a of one shape [B, h, H, W] and an odd square weight [h_out, h, k, k]; "
            f"got f_ref {tuple(f_ref.shape)}, a {tuple(a.shape)}, weight {tuple(weight.shape)}"
        )
    k2 = ks * ks
    if tuple(offset.shape) != (b, 2 * k2, hh, ww) or tuple(mask.shape) != (b, k2, hh, ww):
        raise ValueError(
            f"offset must be {(b, 2 * k2, hh, ww)} and mask {(b, k2, hh, ww)}; got {tuple(offset.shape)}, {tuple(mask.shape)}"
        )
    out = torch.empty((b, o, hh, ww), device=a.device, dtype=dtype)
    ref_out = torch.empty_like(out) if reference_only else out
    w = weight.reshape(o, c, k2)
    bias_arg = bias.to(dtype) if bias is not None else w  # any pointer when HAS_BIAS is off
    if fp32_products is None:
        fp32_products = "bf16x3" if a.device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "ieee"
    if fp32_products not in ("ieee", "tf32", "bf16x3"):
        raise ValueError(f"fp32_products must be 'ieee', 'tf32' or 'bf16x3', got {fp32_products!r}")
    split = dtype == torch.float32 and fp32_products == "bf16x3"
    precision = "tf32" if dtype == torch.float32 and fp32_products == "tf32" else "ieee"
    # Triton's interpreter (CPU tensors) multiplies bfloat16 dot operands wrongly (numpy has no
    # bfloat16), so there the operands are widened to float32; on CUDA they stay in the dtype
    dot_f32 = a.device.type != "cuda"
    block_p, block_c, block_o, warps = tiles if tiles is not None else default_tiles(
        b, c, o, hh * ww, multiprocessors(a.device), dtype.itemsize
    )
    if min(block_p, block_c, block_o) < 16 or any(t & (t - 1) for t in (block_p, block_c, block_o, warps)):
        raise ValueError(f"tiles must be powers of two, the first three at least 16; got {tiles}")
    if num_stages is None and dtype == torch.float32:
        num_stages = 1
    grid = (triton.cdiv(hh * ww, block_p), b, triton.cdiv(o, block_o))
    if out.numel():
        _adabd_kernel[grid](
            f_ref, a, offset, mask, w, bias_arg, out, ref_out,
            c, hh, ww, o,
            *f_ref.stride(), *a.stride(), *offset.stride(), *mask.stride(), *w.stride(), *out.stride(),
            KS=ks, HAS_BIAS=bias is not None, REF_ONLY=reference_only, PRECISION=precision, SPLIT=split, DOT_F32=dot_f32,
            BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_O=block_o,
            num_warps=warps,
            **({"num_stages": num_stages} if num_stages is not None else {}),
        )
    return out, (ref_out if reference_only else None)
