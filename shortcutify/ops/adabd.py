"""AdaBD's fused blend-and-deform convolution (the shortcut block's central op).

This is the reference implementation in plain PyTorch, which every device runs today. A
device-specific fast path (e.g. a Triton kernel registered with ``torch.library.custom_op``)
belongs here, behind :func:`adabd_conv`'s signature, tested against this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .deform import columns_matmul, deform_columns

__all__ = ["adabd_conv"]


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

    Dtypes: ``f_ref`` and ``a`` are blended in their promoted dtype; sampling positions are
    float32 or wider whatever the inputs' dtype (see :func:`~shortcutify.ops.deform.sampling_dtype`).

    Returns:
        ``(out, ref_out)``: ``out`` is ``[B, h_out, H, W]``; ``ref_out`` the same for
        ``m = 0`` when ``reference_only``, else ``None``.
    """
    k = int(weight.shape[-1])
    b, c, hh, ww = a.shape
    p = k // 2
    # one dtype for the blend (under autocast the taps and the heads' outputs can differ);
    # the matrix product then follows autocast, or the weight's dtype without it
    dtype = torch.promote_types(f_ref.dtype, a.dtype)
    f_ref, a, mask = f_ref.to(dtype), a.to(dtype), mask.to(dtype)
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
