"""A 1×1 convolution plus a residual, returned contiguous: the full block's reconstruction.

On CPU the full-resolution block works in channels-last memory (its convs and AdaBD's product
are faster there), but what it returns goes to the generator's tail, which reads contiguous
(NCHW) memory faster. Its last step, ``conv1x1(x) + residual`` on channels-last maps, would then
end in a whole-map transpose through torch's strided copy, which on CPU runs at a fraction of a
plain copy's speed. :func:`pointwise_conv_add` computes the sum a chunk of pixels at a time
instead: each chunk's channel rows ``residual + x·Wᵀ + b`` by one ``addmm`` (the conv's product),
written transposed into the contiguous output while they are in cache. Same values up to the
order of the additions (rounding).

Everywhere else (other devices and dtypes, a recorded gradient, autocast, ``torch.compile``
tracing, operands not in channel rows, :func:`~shortcutify.ops.use_fast_path` off) it is
``(F.conv2d(x, weight, bias) + residual).contiguous()``. The CPU path goes through the custom op
``shortcutify::pointwise_conv_add`` (with a fake implementation), so that ``cost()`` counts it as
that conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .fast_path import fast_path_enabled

__all__ = ["pointwise_conv_add", "pointwise_rows_apply", "channel_rows", "PIXELS_PER_CHUNK", "MIN_PIXELS"]

#: pixels per chunk of the CPU path (a chunk's rows stay in cache between the product and the
#: transposed write), and the fewest pixels per sample for which it pays: on smaller maps the plain sum's
#: transpose stays in cache too. Both chosen with ``python benchmarks/cpu_gather.py --pointwise``
#: (benchmarks/RESULTS.md, "AdaBD on CPU")
PIXELS_PER_CHUNK = 1024
MIN_PIXELS = 128 * 128


def channel_rows(t: Tensor) -> bool:
    """Whether ``t [B, C, H, W]`` is in channel rows: channels innermost and the pixels of each
    sample at one stride (a channels-last map, or a channel slice of one)."""
    if t.dim() != 4:
        return False
    b, c, h, w = t.shape
    s = t.stride()
    return (c == 1 or s[1] == 1) and s[3] >= c and (h == 1 or s[2] == w * s[3])


def pointwise_rows_apply(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor) -> bool:
    """Whether :func:`pointwise_conv_add` takes the CPU chunked path for these operands: CPU
    float32/float64 of one dtype, ``x`` and ``residual`` in channel rows (:func:`channel_rows`), at
    least :data:`MIN_PIXELS` pixels per sample, no gradient recorded, no autocast, no
    ``torch.compile`` tracing, fast paths on."""
    tensors = [t for t in (x, weight, bias, residual) if t is not None]
    return (
        fast_path_enabled()
        and x.dim() == 4
        and x.shape[2] * x.shape[3] >= MIN_PIXELS
        and all(t.device.type == "cpu" and t.dtype == x.dtype for t in tensors)
        and x.dtype in (torch.float32, torch.float64)
        and channel_rows(x)
        and channel_rows(residual)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _rows(t: Tensor, i: int) -> Tensor:
    """Sample ``i`` of a channel-rows map ``t [B, C, H, W]`` as ``[H·W, C]`` (a view)."""
    s = t.stride()
    return t[i].as_strided((t.shape[2] * t.shape[3], t.shape[1]), (s[3], 1))


@torch.library.custom_op("shortcutify::pointwise_conv_add", mutates_args=())
def _pointwise_op(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor) -> Tensor:
    if not (channel_rows(x) and channel_rows(residual)):  # called directly on other operands: the reference
        return (F.conv2d(x, weight, bias) + residual).contiguous()
    b, cin, h, w = x.shape
    cout, n = weight.shape[0], h * w
    out = torch.empty((b, cout, h, w), dtype=x.dtype, device=x.device)
    wt = weight.reshape(cout, cin).t()  # [Cin, Cout]
    with torch.no_grad():
        for i in range(b):
            xs, rs, o = _rows(x, i), _rows(residual, i), out[i].view(cout, n)
            for n0 in range(0, n, PIXELS_PER_CHUNK):
                n1 = min(n, n0 + PIXELS_PER_CHUNK)
                chunk = torch.addmm(rs[n0:n1], xs[n0:n1], wt)  # [pixels, Cout]
                if bias is not None:
                    chunk.add_(bias)
                o[:, n0:n1].copy_(chunk.t())
    return out


@_pointwise_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


def pointwise_conv_add(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor) -> Tensor:
    """``F.conv2d(x, weight, bias) + residual`` for a 1×1 convolution, contiguous.

    Args:
        x: ``[B, Cin, H, W]``.
        weight: ``[Cout, Cin, 1, 1]``; bias: ``[Cout]`` or ``None``.
        residual: ``[B, Cout, H, W]``.
        Any memory format; with ``x`` and ``residual`` in channel rows (channels-last, or channel
        slices of channels-last maps) on CPU, the sum is computed without a whole-map transpose
        (:func:`pointwise_rows_apply`).

    Returns:
        ``[B, Cout, H, W]`` in contiguous memory, dtype as ``conv2d(x) + residual`` gives.

    Raises:
        ValueError: ``weight`` is not a 1×1 conv's, or the shapes do not fit together.
    """
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f"weight must be a 1x1 convolution's [Cout, Cin, 1, 1], got {tuple(weight.shape)}")
    if x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"x must be [B, Cin={weight.shape[1]}, H, W], got {tuple(x.shape)}")
    expected = (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
    if tuple(residual.shape) != expected:
        raise ValueError(f"residual must have the conv output's shape {expected}, got {tuple(residual.shape)}")
    if pointwise_rows_apply(x, weight, bias, residual):
        return torch.ops.shortcutify.pointwise_conv_add(x, weight, bias, residual)
    return (F.conv2d(x, weight, bias) + residual).contiguous()
