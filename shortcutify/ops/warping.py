"""Backward warping by a flow, with a GPU and a CPU fast path (what the blocks call).

:func:`warp` runs :func:`~shortcutify.ops.deform.warp_reference` (``grid_sample`` in plain
PyTorch) wherever no fast path applies, and whenever a gradient is recorded through it
(training). For inference on CPU tensors of float32 or float64 in channels-last memory, wide
and large enough (:func:`~shortcutify.ops.gather.warp_gather_pays`), it gathers the four bilinear
corners' channel rows instead (:func:`~shortcutify.ops.gather.warp_gather`, through the same
custom op so that ``cost()`` counts it as the reference; ``grid_sample`` on CPU gathers one
channel at a time). For inference on CUDA tensors of float32, float16 or bfloat16 with
``triton`` installed, it calls the custom op ``torch.ops.shortcutify.warp`` (one Triton
kernel, :mod:`shortcutify.ops.warp_triton`, with a fake implementation so that
``torch.compile`` and ``torch.export`` see one op), which also adds a residual in the same
pass. :func:`~shortcutify.ops.use_fast_path` turns it off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .deform import _check_4d, warp_reference
from .fast_path import fast_path_available, fast_path_enabled, kernel, kernel_failed
from .gather import warp_gather, warp_gather_applies, warp_gather_serves

__all__ = ["warp"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _rows_out(input: Tensor, residual: Tensor | None) -> bool:
    """Whether the op returns channels-last memory: a CPU warp without a residual of a
    channels-last input (what the row gathers write; the other paths follow it)."""
    return residual is None and input.device.type == "cpu" and input.is_contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("shortcutify::warp", mutates_args=())
def _warp_op(input: Tensor, flow: Tensor, residual: Tensor | None) -> Tensor:
    if residual is None and warp_gather_serves(input, flow):  # the CPU fast path, also under Triton's interpreter
        with torch.no_grad():
            return warp_gather(input, flow)
    if fast_path_available(input.device):
        try:
            return kernel("warp")(input, flow, residual)  # type: ignore[misc]
        except Exception as err:  # e.g. a Triton that cannot compile the kernel for this card: correct, slower, said once
            kernel_failed(input.device, "warp", err)
    out = warp_reference(input, flow)  # a device without the kernel (e.g. an exported graph run on CPU), or it failed
    out = out if residual is None else out + residual
    return out.contiguous(memory_format=torch.channels_last if _rows_out(input, residual) else torch.contiguous_format)


@_warp_op.register_fake
def _(input: Tensor, flow: Tensor, residual: Tensor | None) -> Tensor:
    dtype = input.dtype if residual is None else torch.promote_types(input.dtype, residual.dtype)
    return torch.empty_like(input, dtype=dtype, memory_format=torch.channels_last if _rows_out(input, residual) else torch.contiguous_format)


def _records_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def warp(input: Tensor, flow: Tensor, residual: Tensor | None = None, inplace: bool = False) -> Tensor:
    """Backward warp with bilinear sampling: ``out[b, :, y, x] = input[b, :, y + dy, x + dx]`` (+ ``residual``).

    Args:
        input: ``[B, C, H, W]``, any memory format (channels-last is faster on CPU: the row
            gathers then read it in place).
        flow: ``[B, 2, H, W]`` displacements in pixels, channel 0 ``dy``, channel 1 ``dx``
            (any floating dtype; positions are computed in
            :func:`~shortcutify.ops.deform.sampling_dtype`).
        residual: ``[B, C, H, W]`` added to the warped input (on the fast path in the same
            pass, rounded once).
        inplace: the caller gives ``residual`` up: where no gradient is recorded and the
            plain-PyTorch path runs, the sum is written into ``residual``'s memory (one fewer
            buffer the size of the input). The fast path always writes a new tensor.

    Returns:
        ``[B, C, H, W]``: without a residual, channels-last where the CPU row gathers ran
        (channels-last input), contiguous on the GPU fast path, else as ``grid_sample`` returns
        it (contiguous on CPU); with one, in ``residual``'s memory format (contiguous on the GPU
        fast path); samples outside the image read zeros (the
        rule of :func:`~shortcutify.ops.deform_columns`, of which this is the ``k = 1`` case).
        Its dtype is ``input``'s, promoted with ``residual``'s when one is given (as ``residual + warp``).
    """
    _check_4d(input, "input", "[B, C, H, W]")
    _check_4d(flow, "flow", "[B, 2, H, W]")
    b, c, h, w = input.shape
    if tuple(flow.shape) != (b, 2, h, w):
        raise ValueError(f"flow must have shape [B, 2, H, W] = {(b, 2, h, w)}, got {tuple(flow.shape)}")
    if residual is not None and tuple(residual.shape) != (b, c, h, w):
        raise ValueError(f"residual must have the input's shape {(b, c, h, w)}, got {tuple(residual.shape)}")
    if any(t is not None and t.device != input.device for t in (flow, residual)):
        raise ValueError(
            f"input, flow and residual must be on one device; got {input.device}, {flow.device}"
            f"{'' if residual is None else f', {residual.device}'}: move them with .to({str(input.device)!r})"
        )
    if (
        fast_path_enabled()
        and input.device.type == "cuda"
        and input.dtype in _KERNEL_DTYPES
        and flow.is_floating_point()
        and (residual is None or residual.dtype in _KERNEL_DTYPES)
        and not _records_grad(input, flow, residual)
        and fast_path_available("cuda")
    ):
        return torch.ops.shortcutify.warp(input, flow, residual)
    if fast_path_enabled() and warp_gather_applies(input, flow):  # CPU inference, channels-last input
        out = torch.ops.shortcutify.warp(input, flow, None)  # the row gathers, counted as the reference (cost)
    else:
        out = warp_reference(input, flow)
    if residual is None:
        return out
    if inplace and not _records_grad(input, flow, residual) and torch.promote_types(residual.dtype, out.dtype) == residual.dtype:
        return residual.add_(out)
    return residual + out
