"""CPU memory-layout changes that torch's generic strided copy does slowly.

On CPU, ``x.contiguous(memory_format=...)`` of a 4-D tensor goes through the generic
strided copy; one 2-D transpose per sample is copied cache-blocked and is several times
faster. Used by the shortcut blocks, whose CPU fast paths run some ops in channels-last
memory. Everywhere else (other devices, autograd, compiled code, odd strides) these are the
plain ``contiguous`` calls.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_channels_last", "to_contiguous", "write_channel_rows", "is_channels_last"]


def _transpose_rows(src: Tensor, dst: Tensor) -> Tensor:
    """``dst[i] = src[i].T`` for ``[B, M, N]`` -> ``[B, N, M]`` (``dst`` contiguous), one 2-D copy per sample."""
    for i in range(src.shape[0]):
        dst[i].copy_(src[i].t())
    return dst


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` ``[B, C, H, W]`` is in channels-last memory and not also contiguous (one channel or one
    pixel per sample is both: such a tensor counts as contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _plain(x: Tensor) -> bool:
    """Whether the plain ``contiguous`` call is the one to make: off CPU, under autograd, or while
    ``torch.compile`` traces (the compiler writes its own copy, and a per-sample loop would
    tie the compiled program to one batch size)."""
    return x.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling()


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` ``[B, C, H, W]`` in channels-last memory (same values)."""
    b, c, hh, ww = x.shape
    if _plain(x) or not x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    _transpose_rows(x.view(b, c, hh * ww), out.permute(0, 2, 3, 1).view(b, hh * ww, c))
    return out


def to_contiguous(x: Tensor) -> Tensor:
    """``x`` ``[B, C, H, W]`` in contiguous (NCHW) memory (same values)."""
    b, c, hh, ww = x.shape
    if _plain(x) or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _transpose_rows(x.permute(0, 2, 3, 1).reshape(b, hh * ww, c), out.view(b, c, hh * ww))
    return out


def write_channel_rows(x: Tensor, out: Tensor) -> Tensor:
    """Write ``x [B, C, H, W]`` as channel rows into ``out [B, H·W, C]`` (contiguous) and return ``out``:
    one cache-blocked 2-D transpose per sample where ``x`` is contiguous, else one strided copy."""
    b, c, hh, ww = x.shape
    if x.is_contiguous():
        return _transpose_rows(x.view(b, c, hh * ww), out)
    return out.copy_(x.permute(0, 2, 3, 1).reshape(b, hh * ww, c))
