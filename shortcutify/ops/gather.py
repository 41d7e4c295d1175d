"""Bilinear sampling by weighted row gathers: the CPU fast paths of :func:`~shortcutify.ops.adabd_conv`
and :func:`~shortcutify.ops.warp`.

On CPU, ``grid_sample`` vectorises over output positions and gathers one channel at a time.
Here a feature map is read as a table of channel rows ``[B·H·W, C]`` (channels-last order),
and each sample is the weighted sum of the rows of its four bilinear corners: one
``F.embedding_bag(..., mode="sum", per_sample_weights=...)`` call streams whole rows.
The semantics are those of the references (``grid_sample`` with ``align_corners=False`` and
zeros padding): corners outside the map read zeros, and a position that is not finite gives
NaN. Positions are the reference's up to rounding: the reference goes through
``grid_sample``'s normalised coordinates, these stay in pixels.

:func:`adabd_conv_gather` is :func:`~shortcutify.ops.adabd_conv_reference`, with the blend
folded into the gather (each column is one bag of five rows: the reference's four corners
weighted ``(1 − m)·bilinear``, the current frame's tap weighted ``m``). Inference only (no
gradient is defined here: the ops that call these send calls that record gradients to the
references); float32 and float64.

:func:`warp_gather` is :func:`~shortcutify.ops.deform.warp_reference` (the ``k = 1`` case: a bag
of the four corners per output pixel), returning channels-last memory.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .layout import is_channels_last, write_channel_rows

__all__ = ["adabd_conv_gather", "warp_gather", "warp_gather_applies", "warp_gather_serves", "warp_gather_pays", "MIN_WARP_ELEMENTS", "gather_applies", "gather_serves", "gather_pays", "rows_per_chunk", "MIN_CHANNELS", "MIN_PIXELS", "ROWS_MIN_CHANNELS", "ROWS_MIN_VALUES", "CHUNK_BYTES"]

_DTYPES = (torch.float32, torch.float64)

# Where the gather is faster than the reference on CPU: rows of at least this many channels, maps
# of at least this many pixels (below, its fixed cost of some forty small index ops dominates).
# Chosen from the grid that ``python benchmarks/cpu_gather.py`` measures (benchmarks/RESULTS.md).
MIN_CHANNELS = 32
MIN_PIXELS = 64 * 64
# The same for features in channels-last memory, as the full block gives them since 0.19 (the product then
# writes channel rows, which is faster): at least this many channels and values per sample (h·H·W).
ROWS_MIN_CHANNELS = 16
ROWS_MIN_VALUES = 2**15
# The warp's: maps of at least MIN_CHANNELS channels and this many values per sample (its bag has four
# rows, not five per tap, so its fixed cost is paid back later). From ``python benchmarks/cpu_gather.py --warp``.
MIN_WARP_ELEMENTS = 2**18
# Bytes of the columns one chunk of output rows gathers (see ``rows_per_chunk``). The op's working set
# (columns, sample positions and bags: about twice the columns) would otherwise grow with the map and,
# on the speed model's default block, set a shortcut frame's peak memory above the teacher's
# (``benchmarks/speed.py``). Chosen with ``python benchmarks/cpu_gather.py --chunks`` (RESULTS.md
# "AdaBD on CPU"): at most a few ms slower than unchunked where it splits a map, faster on large maps;
# smaller budgets cost more per chunk.
CHUNK_BYTES = 2**23


def gather_serves(*tensors: Tensor | None) -> bool:
    """Whether these operands are ones the gather functions take: all on CPU, float32 or float64."""
    return all(t.device.type == "cpu" and t.dtype in _DTYPES for t in tensors if t is not None)


def gather_pays(a: Tensor, rows: bool | None = None) -> bool:
    """Whether AdaBD on features like ``a [B, h, H, W]`` is faster by gathers than by the
    reference: for ``a`` in contiguous memory ``h >= MIN_CHANNELS`` and ``H·W >= MIN_PIXELS``; in
    channels-last memory (the product then writes channel rows, faster) ``h >= ROWS_MIN_CHANNELS``
    and ``h·H·W >= ROWS_MIN_VALUES``. ``rows``: judge ``a`` as if it were (``True``) or were not
    (``False``) channels-last, whatever its format (``None``: by its format)."""
    if a.dim() != 4:
        return False
    h, n = a.shape[1], a.shape[2] * a.shape[3]
    if rows is None:
        rows = is_channels_last(a)
    if rows:
        return h >= ROWS_MIN_CHANNELS and h * n >= ROWS_MIN_VALUES
    return h >= MIN_CHANNELS and n >= MIN_PIXELS


def gather_applies(*tensors: Tensor | None) -> bool:
    """Whether :func:`~shortcutify.ops.adabd_conv` should take the gather path for its operands
    ``(f_ref, a, ...)``: :func:`gather_serves`, :func:`gather_pays` (for ``a``), no autocast on
    CPU, no gradient recorded, no ``torch.compile`` tracing (compiled code keeps the
    reference, which the compiler fuses)."""
    return (
        gather_serves(*tensors)
        and gather_pays(tensors[1])  # type: ignore[arg-type]
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))
        and not torch.compiler.is_compiling()
    )


def warp_gather_pays(input: Tensor) -> bool:
    """Whether warping ``input [B, C, H, W]`` is faster by gathers than by the reference:
    ``C >= MIN_CHANNELS`` and ``C·H·W >= MIN_WARP_ELEMENTS``."""
    return input.dim() == 4 and input.shape[1] >= MIN_CHANNELS and input.shape[1] * input.shape[2] * input.shape[3] >= MIN_WARP_ELEMENTS


def warp_gather_serves(input: Tensor, flow: Tensor) -> bool:
    """Whether :func:`warp_gather` is the faster warp for these operands: :func:`gather_serves`,
    :func:`warp_gather_pays` and ``input`` in channels-last memory (its channel rows are then a
    view, and the result keeps that format)."""
    return gather_serves(input, flow) and warp_gather_pays(input) and input.is_contiguous(memory_format=torch.channels_last)


def warp_gather_applies(input: Tensor, flow: Tensor) -> bool:
    """Whether :func:`~shortcutify.ops.warp` should take :func:`warp_gather`: :func:`warp_gather_serves`,
    no autocast on CPU, no gradient recorded, no ``torch.compile`` tracing (compiled code keeps
    the reference, which the compiler fuses)."""
    return (
        warp_gather_serves(input, flow)
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (input.requires_grad or flow.requires_grad))
        and not torch.compiler.is_compiling()
    )


def warp_gather(input: Tensor, flow: Tensor) -> Tensor:
    """:func:`~shortcutify.ops.deform.warp_reference` by row gathers: ``input [B, C, H, W]``,
    ``flow [B, 2, H, W]`` (pixels, ``dy`` then ``dx``); returns ``[B, C, H, W]`` in channels-last
    memory, ``input``'s dtype (float32 or float64). Each output pixel is one bag of its four
    bilinear corners' channel rows (zeros outside the map; NaN where the position is not finite).
    Inference only."""
    b, c, hh, ww = input.shape
    n = hh * ww
    pos = torch.promote_types(torch.promote_types(input.dtype, flow.dtype), torch.float32)
    index = _index_dtype(b * n)
    table = input.permute(0, 2, 3, 1).reshape(b * n, c)  # a view for channels-last input
    ys, xs = _pixels(hh, ww, pos)
    f = flow.to(pos)
    rows, bilinear = _bilinear(ys + f[:, 0], xs + f[:, 1], hh, ww, index)  # 4 × [B, H, W]
    base = (torch.arange(b, dtype=index) * n).view(b, 1, 1)
    bags = torch.empty((b, hh, ww, 4), dtype=index)
    weights = torch.empty((b, hh, ww, 4), dtype=pos)
    for j in range(4):
        torch.add(rows[j], base, out=bags[..., j])
        weights[..., j] = bilinear[j]
    out = F.embedding_bag(bags.view(-1, 4), table, per_sample_weights=weights.view(-1, 4).to(input.dtype), mode="sum")
    return out.view(b, hh, ww, c).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=4)
def _pixels(h: int, w: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pixel rows ``[1, H, 1]`` and columns ``[1, 1, W]`` of an ``h × w`` map."""
    with torch.inference_mode(False):  # cached: a tensor made in inference mode could never be saved for backward
        return torch.arange(h, dtype=dtype).view(1, h, 1), torch.arange(w, dtype=dtype).view(1, 1, w)


def _clamped(p: Tensor, size: int) -> Tensor:
    """Positions clamped to ``[-1, size]`` (NaN to -1): beyond one pixel outside the map, all
    four corners are outside it, so clamping there changes no sample."""
    return torch.where(p > -1, p, -1.0).clamp_(max=size)


def _bilinear(py: Tensor, px: Tensor, h: int, w: int, index: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
    """The four bilinear corners of pixel positions ``(py, px)`` (any shape ``S``, float) in an
    ``h × w`` map: their rows ``y·w + x`` (``index`` dtype) and weights, in the order
    ``(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)``. A corner outside the map gets
    weight zero and the row of a corner inside it; a position that is not finite gets NaN
    weights (``grid_sample`` gives NaN there)."""
    nonfinite = (py - py) + (px - px)  # 0, or NaN
    py, px = _clamped(py, h), _clamped(px, w)
    y0, x0 = py.floor(), px.floor()  # in [-1, h], [-1, w]
    fy, fx = py - y0, px - x0
    # row y0 is inside for 0 <= y0 <= h - 1, row y0 + 1 for y0 <= h - 2 (y0 >= -1 always)
    wy = ((1 - fy) * ((y0 >= 0) & (y0 <= h - 1)) + nonfinite, fy * (y0 <= h - 2) + nonfinite)
    wx = ((1 - fx) * ((x0 >= 0) & (x0 <= w - 1)), fx * (x0 <= w - 2))
    yi, xi = y0.to(index), x0.to(index)
    rows = (yi.clamp(0, h - 1) * w, (yi + 1).clamp_(0, h - 1) * w)
    cols = (xi.clamp(0, w - 1), (xi + 1).clamp_(0, w - 1))
    return [r + c for r in rows for c in cols], [a * b for a in wy for b in wx]


def _index_dtype(rows: int) -> torch.dtype:
    return torch.int32 if rows < 2**31 else torch.int64


@functools.lru_cache(maxsize=4)  # 16 bytes per pixel and tap each: a few frame sizes' worth
def _taps(h: int, w: int, k: int, dtype: torch.dtype, index: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For a ``k × k`` "same" conv on an ``h × w`` map: every tap's undeformed position
    ``ty, tx [H, W, k²]``, its row in the map ``rows [H, W, k²]`` (``index`` dtype; a row inside
    the map for taps outside it) and ``inside [H, W, k²]`` (1 for taps inside the map, else 0)."""
    with torch.inference_mode(False):  # cached: a tensor made in inference mode could never be saved for backward
        offsets = torch.arange(k, dtype=dtype) - k // 2
        ty = (torch.arange(h, dtype=dtype).view(h, 1, 1) + offsets.repeat_interleave(k)).expand(h, w, k * k).contiguous()
        tx = (torch.arange(w, dtype=dtype).view(1, w, 1) + offsets.repeat(k)).expand(h, w, k * k).contiguous()
        inside = ((ty >= 0) & (ty <= h - 1) & (tx >= 0) & (tx <= w - 1)).to(dtype)
        rows = (ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1)).to(index)
        return ty, tx, rows, inside


def rows_per_chunk(b: int, w: int, k2: int, c: int, itemsize: int, budget: int | None = None) -> int:
    """How many rows of a ``w``-wide output :func:`adabd_conv_gather` computes at a time: as many
    as keep one chunk's columns (``b·rows·w·k2·c`` values of ``itemsize`` bytes) within
    ``budget`` bytes (default :data:`CHUNK_BYTES`), and at least one."""
    per_row = b * w * k2 * c * itemsize
    return max(1, (CHUNK_BYTES if budget is None else budget) // max(per_row, 1))


def adabd_conv_gather(
    f_ref: Tensor,
    a: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    reference_only: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """:func:`~shortcutify.ops.adabd_conv_reference` by row gathers (same arguments, shapes and
    results: ``f_ref``, ``a`` ``[B, h, H, W]``, ``offset [B, 2·k², H, W]``, ``mask [B, k², H, W]``,
    ``weight [h_out, h, k, k]``; returns ``[B, h_out, H, W]``, and the reference-only conv when
    asked for). The results are in ``a``'s memory format where that is channels-last (the product
    then writes channel rows, which it computes faster on CPU), else contiguous.

    Both maps go into one table of channel rows (the reference's, then the current frame's);
    each output pixel and tap is one bag of five rows, and the columns ``[B·H·W·k², h]`` meet
    the weight in one batched matrix product per chunk of output rows (:func:`rows_per_chunk`:
    the columns of all rows at once would be ``k²`` times the size of the input map).
    """
    b, c, hh, ww = a.shape
    cout, _, k, _ = weight.shape
    k2, n = k * k, hh * ww
    dtype = torch.promote_types(f_ref.dtype, a.dtype)
    pos = torch.promote_types(torch.promote_types(dtype, offset.dtype), torch.float32)
    index = _index_dtype(2 * b * n)
    ty, tx, cur_rows, inside = _taps(hh, ww, k, pos, index)
    off = offset.to(pos).reshape(b, k2, 2, hh, ww).permute(0, 3, 4, 1, 2)  # [B, H, W, k², 2], a view
    m = mask.to(pos).permute(0, 2, 3, 1)  # [B, H, W, k²]
    table = torch.empty((2, b, n, c), dtype=dtype)
    write_channel_rows(f_ref.to(dtype), table[0])
    write_channel_rows(a.to(dtype), table[1])
    table = table.view(2 * b * n, c)
    base = (torch.arange(b, dtype=index) * n).view(b, 1, 1, 1)
    w2 = weight.to(dtype).permute(0, 2, 3, 1).reshape(cout, k2 * c)  # [h_out, k²·h], taps in the columns' order
    bias_d = None if bias is None else bias.to(dtype)
    rows_out = is_channels_last(a)
    layout = torch.channels_last if rows_out else torch.contiguous_format
    out = torch.empty((b, cout, hh, ww), dtype=dtype).contiguous(memory_format=layout)
    ref_out = torch.empty_like(out) if reference_only else None
    step = rows_per_chunk(b, ww, k2, c, dtype.itemsize)

    def conv(columns: Tensor, into: Tensor, r0: int, r1: int) -> None:  # columns [B·rows·W·k², h] -> into[..., r0:r1, :]
        p = (r1 - r0) * ww
        cols = columns.view(b, p, k2 * c)
        if rows_out:  # channel rows [rows·W, h_out] per sample: columns · Wᵀ, written in place
            rows = into.permute(0, 2, 3, 1).view(b, hh * ww, cout)[:, r0 * ww : r1 * ww]
            for i in range(b):
                if bias_d is None:
                    torch.mm(cols[i], w2.t(), out=rows[i])
                else:
                    torch.addmm(bias_d, cols[i], w2.t(), out=rows[i])
            return
        wt = w2.unsqueeze(0).expand(b, cout, k2 * c)
        y = torch.bmm(wt, cols.transpose(1, 2)) if bias_d is None else torch.baddbmm(bias_d.view(1, cout, 1).expand(b, cout, p), wt, cols.transpose(1, 2))
        into[:, :, r0:r1].copy_(y.view(b, cout, r1 - r0, ww))

    for r0 in range(0, hh, step):
        r1 = min(hh, r0 + step)
        o = off[:, r0:r1]
        rows, bilinear = _bilinear(ty[r0:r1] + o[..., 0], tx[r0:r1] + o[..., 1], hh, ww, index)  # 4 × [B, rows, W, k²]
        mc = m[:, r0:r1]
        bags = torch.empty((b, r1 - r0, ww, k2, 5), dtype=index)
        weights = torch.empty((b, r1 - r0, ww, k2, 5), dtype=pos)
        keep = 1 - mc
        for j in range(4):  # each column written in place, in one pass
            torch.add(rows[j], base, out=bags[..., j])
            torch.mul(bilinear[j], keep, out=weights[..., j])
        torch.add(cur_rows[r0:r1], base + b * n, out=bags[..., 4])
        torch.mul(mc, inside[r0:r1], out=weights[..., 4])
        conv(F.embedding_bag(bags.view(-1, 5), table, per_sample_weights=weights.view(-1, 5).to(dtype), mode="sum"), out, r0, r1)
        if ref_out is not None:
            ref_bags = bags[..., :4].reshape(-1, 4)
            ref_weights = torch.stack(bilinear, dim=-1).view(-1, 4).to(dtype)
            conv(F.embedding_bag(ref_bags, table, per_sample_weights=ref_weights, mode="sum"), ref_out, r0, r1)
    return out, ref_out
