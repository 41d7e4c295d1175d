"""AdaBD's fused blend-and-deform convolution (the shortcut block's central op).

:func:`adabd_conv` is what the blocks call. Wherever no fast path applies (and whenever a
gradient is recorded through it) it runs the reference implementation in plain PyTorch,
:func:`adabd_conv_reference`. Otherwise it calls the custom op
``torch.ops.shortcutify.adabd_conv`` (registered with ``torch.library.custom_op``, with a
fake implementation, so that ``torch.compile`` and ``torch.export`` see one op, and
``cost()`` counts it as its reference), whose backward recomputes the reference:

* on CUDA tensors of float32, float16 or bfloat16, with ``triton`` installed (the ``gpu``
  extra), one Triton kernel (:mod:`shortcutify.ops.adabd_triton`), tested against the
  reference (on CPU through Triton's interpreter);
* on CPU tensors of float32 or float64 with enough channels and pixels for it to pay (no
  autocast, no gradient, not while ``torch.compile`` traces), the same computation by
  weighted row gathers (:mod:`shortcutify.ops.gather`: no ``grid_sample``, the blend folded
  into the gather).

:func:`use_fast_path` turns both off, e.g. to compare with the reference
(:mod:`shortcutify.ops.fast_path` holds the switch and the fallback rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .deform import columns_matmul, deform_columns
from .fast_path import fast_path_available, fast_path_enabled, kernel, kernel_failed, use_fast_path
from .gather import adabd_conv_gather, gather_applies, gather_pays, gather_serves
from .layout import is_channels_last

__all__ = ["adabd_conv", "adabd_conv_reference", "use_fast_path", "fast_path_available"]


@torch.library.custom_op("shortcutify::adabd_conv", mutates_args=())
def _adabd_op(
    f_ref: Tensor, a: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, reference_only: bool
) -> tuple[Tensor, Tensor]:
    out = None
    # CPU tensors where the gather pays: the gather, also under Triton's interpreter
    cpu_gather = gather_serves(f_ref, a, offset, mask, weight, bias) and gather_pays(a)
    if not cpu_gather and fast_path_available(a.device):
        try:
            out, ref_out = kernel("adabd")(f_ref, a, offset, mask, weight, bias, reference_only)  # type: ignore[misc]
        except Exception as err:  # e.g. a Triton that cannot compile the kernel for this card: correct, slower, said once
            kernel_failed(a.device, "adabd", err)
    if out is None:  # the CPU fast path; or no Triton kernel here, or it failed: the reference
        implementation = adabd_conv_gather if cpu_gather else adabd_conv_reference
        with torch.no_grad():
            out, ref_out = implementation(f_ref, a, offset, mask, weight, bias, reference_only)
    layout = _layout(a)  # every path returns what the fake says (no copy where it already is)
    out = out.to(a.dtype).contiguous(memory_format=layout)
    ref_out = ref_out.to(a.dtype).contiguous(memory_format=layout) if ref_out is not None else None
    return out, (ref_out if ref_out is not None else out.new_empty(0))


def _layout(a: Tensor) -> torch.memory_format:
    """The op's output memory format: channels-last for a channels-last ``a`` on CPU (what the row
    gathers write), else contiguous."""
    return torch.channels_last if a.device.type == "cpu" and is_channels_last(a) else torch.contiguous_format


@_adabd_op.register_fake
def _(f_ref: Tensor, a: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, reference_only: bool):
    out = a.new_empty((a.shape[0], weight.shape[0], a.shape[2], a.shape[3])).contiguous(memory_format=_layout(a))
    return out, (torch.empty_like(out) if reference_only else out.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:
    f_ref, a, offset, mask, weight, bias, reference_only = inputs
    ctx.save_for_backward(f_ref, a, offset, mask, weight, bias)
    ctx.reference_only = reference_only


def _backward(ctx, grad_out: Tensor, grad_ref: Tensor):
    """Recompute the reference with autograd and differentiate it (the kernel is forward-only)."""
    saved = ctx.saved_tensors
    needs = ctx.needs_input_grad[:6]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(n) if t is not None else None for t, n in zip(saved, needs)]
        out, ref_out = adabd_conv_reference(*leaves, reference_only=ctx.reference_only)
        outs, grads = [out], [grad_out]
        if ctx.reference_only:
            outs.append(ref_out)
            grads.append(grad_ref)
        wanted = [t for t, n in zip(leaves, needs) if n and t is not None]
        found = iter(torch.autograd.grad(outs, wanted, grads, allow_unused=True)) if wanted else iter(())
    return (*(next(found) if n and t is not None else None for t, n in zip(leaves, needs)), None)


_adabd_op.register_autograd(_backward, setup_context=_setup_context)


def adabd_conv(
    f_ref: Tensor,
    a: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    reference_only: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """AdaBD's shared-weight modulated deformable conv, fused.

    Computes ``deform_conv2d(f_ref, offset, weight, mask=1 − m) + deform_conv2d(a, 0, weight, mask=m)``
    (bias added once). Stride 1, "same" padding. Runs the Triton kernel on CUDA, or the row
    gathers on CPU, where they apply (see the module's docstring), else :func:`adabd_conv_reference`.

    Args:
        f_ref: aligned reference feature ``[B, h, H, W]``.
        a: current feature ``[B, h, H, W]``.
        offset: ``[B, 2·k², H, W]`` offsets for ``f_ref`` (interleaved dy, dx), in pixels.
        mask: ``m`` in [0, 1], ``[B, k², H, W]``: the weight of the current frame per tap.
        weight: ``[h_out, h, k, k]``; bias: ``[h_out]``.
        reference_only: also return the conv of the reference alone (``m = 0``).

    Dtypes: ``f_ref`` and ``a`` are blended in their promoted dtype (under ``torch.autocast``
    the product runs in the autocast dtype); sampling positions are float32 or wider whatever
    the inputs' dtype (see :func:`~shortcutify.ops.deform.sampling_dtype`).

    Returns:
        ``(out, ref_out)``: ``out`` is ``[B, h_out, H, W]``; ``ref_out`` the same for
        ``m = 0`` when ``reference_only``, else ``None``.
    """
    dtype = torch.promote_types(f_ref.dtype, a.dtype)
    if (
        fast_path_enabled()
        and a.device.type == "cuda"
        and dtype in (torch.float32, torch.float16, torch.bfloat16)
        and all(t is None or t.device == a.device for t in (f_ref, offset, mask, weight, bias))  # else the reference says so
        and fast_path_available("cuda")
    ):
        if torch.is_autocast_enabled("cuda"):
            dtype = torch.get_autocast_dtype("cuda")
        out, ref_out = torch.ops.shortcutify.adabd_conv(
            f_ref.to(dtype), a.to(dtype), offset, mask, weight.to(dtype), bias.to(dtype) if bias is not None else None, reference_only
        )
        return out, (ref_out if reference_only else None)
    if fast_path_enabled() and gather_applies(f_ref, a, offset, mask, weight, bias):  # CPU inference
        out, ref_out = torch.ops.shortcutify.adabd_conv(f_ref, a, offset, mask, weight, bias, reference_only)
        return out, (ref_out if reference_only else None)
    return adabd_conv_reference(f_ref, a, offset, mask, weight, bias, reference_only)


def adabd_conv_reference(
    f_ref: Tensor,
    a: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    reference_only: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """:func:`adabd_conv` in plain PyTorch (every device; differentiable), one matrix product.

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
