"""A parameter-free motion estimate between two feature maps: local correlation, soft arg-max.

:func:`correlation_flow` estimates, for every position of the current feature map, where its
content lies in the reference map, from features a shortcut frame computes anyway (no
parameters, no training). The blocks use it as the starting point of their flow, so that an
untrained block already follows the motion instead of repeating the keyframe.

1. :func:`coarse_features`: both maps average-pooled to a coarse grid (:func:`coarse_grid`:
   the longer side near 40, so the search range scales with the frame; a block fixes the
   pooling factor for the frame size it was built for), each channel's
   spatial mean removed, each position's channel vector scaled to unit length;
2. :func:`correlation_flow`: every coarse position of the current map is compared with the
   ``(2r+1)²`` positions of the reference around it (padded by replication): cosine
   similarities ``[B, (2r+1)², h, w]`` (:func:`local_similarities`), averaged over a few large
   regions or over each position's neighbourhood; their soft arg-max (softmax of similarity /
   ``temperature``) is the expected displacement (a featureless region averages to no
   motion), optionally kept only where one displacement matches clearly better than none
   (``margin``), interpolated bilinearly to the fine grid and clamped so that every displaced
   position lies inside the map (a warp then never reads the zeros outside).

:data:`MOTION_PRIORS` names the settings the blocks use.

MACs: ``C·(2r+1)·(w+2r)`` per coarse position for the correlation (one batched matrix product
per row, counted as the ``bmm`` it is; :func:`local_similarities`), ``C`` for each coarse
position's length, plus the pooling; the rest is element-wise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["coarse_pool", "coarse_grid", "coarse_features", "local_similarities", "correlation_flow", "MOTION_PRIORS"]


#: the estimators a block's ``motion_prior`` names: settings of :func:`correlation_flow`.
#: ``"local"`` (since 0.10; what ``motion_prior=True`` builds): one displacement per coarse
#: position from similarities averaged over its 3×3 neighbourhood, kept only where a
#: displacement matches clearly better than none; ``"regional"`` (0.5 to 0.9): one
#: displacement per large region. Chosen on the training frames of the distillation benchmark
#: (``benchmarks/RESULTS.md``, "Motion prior").
MOTION_PRIORS: dict[str, dict[str, float | int]] = {
    "local": {"radius": 4, "regions": 0, "window": 1, "margin": 0.1, "temperature": 0.01},
    "regional": {"radius": 8, "regions": 2, "temperature": 0.02},
}


def _check(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor [B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")


def coarse_pool(size: tuple[int, int], target: int = 40) -> int:
    """The pooling factor for a map of ``size`` ``(H, W)``: ``⌈max(H, W) / target⌉`` (at least 1), so
    that the coarse grid's longer side is near ``target`` and the search range scales with the frame."""
    return max(1, -(-max(int(size[0]), int(size[1])) // target))


def coarse_grid(size: tuple[int, int], target: int = 40, pool: int | None = None) -> tuple[int, int]:
    """The coarse grid for a map of ``size`` ``(H, W)``: pooled by ``p = pool`` or, without it, by
    :func:`coarse_pool` of ``size``; ``(⌈H/p⌉, ⌈W/p⌉)``.

    A fixed ``pool`` keeps the search range the same in pixels on maps of any size (a block
    trained on crops of the frames it runs on: ``ShortcutBlock``'s ``motion_pool``).

    Raises:
        ValueError: ``pool`` is not an integer >= 1.
    """
    if pool is None:
        p = coarse_pool(size, target)
    elif isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be an integer >= 1 or None, got {pool!r}")
    else:
        p = pool
    return -(-int(size[0]) // p), -(-int(size[1]) // p)


def _pooled(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; where ``size`` divides ``x``'s evenly, on CPU, as a depthwise
    convolution with a constant kernel (the same averages, a few times faster there)."""
    c, hh, ww = (int(v) for v in x.shape[1:])
    if (hh, ww) == size:
        return x
    if x.device.type == "cpu" and hh % size[0] == 0 and ww % size[1] == 0:
        kh, kw = hh // size[0], ww // size[1]
        return F.conv2d(x, x.new_full((c, 1, kh, kw), 1.0 / (kh * kw)), stride=(kh, kw), groups=c)
    return F.adaptive_avg_pool2d(x, size)


def coarse_features(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C, h, w]`` (``size``): average-pooled (not at all where ``size`` is
    ``(H, W)``), each channel's spatial mean removed, each position's channel vector scaled to
    unit length (float32; a vector shorter than ``1e-6`` is divided by ``1e-6``, as
    :func:`torch.nn.functional.normalize` does). Read in contiguous memory whatever ``x``'s format, so
    that the float32 rounding, which the soft arg-max of :func:`correlation_flow` amplifies, does not
    depend on it."""
    _check(x, "x")
    xc = _pooled(x.float().contiguous(), (int(size[0]), int(size[1])))
    xc = xc - xc.mean(dim=(2, 3), keepdim=True)
    squares = torch.einsum("bchw,bchw->bhw", xc, xc).unsqueeze(1)  # C MACs per position, as a norm is counted
    return xc * torch.rsqrt(squares.clamp_min(1e-12))


def _row_similarities(x: Tensor, ref: Tensor, radius: int) -> Tensor:
    """``[B, h, w, (2r+1)²]``: :func:`local_similarities` with the displacements last (contiguous).

    One batched matrix product per row of ``x``: its ``w`` channel vectors against the
    ``(2r+1)·(w+2r)`` vectors of the replicate-padded reference rows ``y-r .. y+r``; the
    ``(2r+1)²`` pairs per position are a strided view of that product (the diagonal band).
    ``C·(2r+1)·(w+2r)`` MACs per position, as counted (the ``bmm``), for ``C·(2r+1)²`` used:
    one dense product is several times faster on CPU than one multiply-and-sum per
    displacement, and it is one op for every device, for tracing and for compiling.
    """
    b, c, h, w = (int(v) for v in x.shape)
    k = 2 * radius + 1
    wide = w + 2 * radius
    padded = F.pad(ref, (radius,) * 4, mode="replicate")  # [B, C, h + 2r, w + 2r]
    bands = padded.unfold(2, k, 1).permute(0, 2, 1, 4, 3).reshape(b * h, c, k * wide)  # [B·h, C, (dy, X)]
    rows = x.permute(0, 2, 3, 1).reshape(b * h, w, c)  # [B·h, w, C]
    full = torch.bmm(rows, bands).view(b, h, w, k, wide)  # every position of a row against every padded column
    s = full.stride()
    band = full.as_strided((b, h, w, k, k), (s[0], s[1], s[2] + s[4], s[3], s[4]))  # column X = x + dx
    return band.reshape(b, h, w, k * k)


def local_similarities(x: Tensor, ref: Tensor, radius: int) -> Tensor:
    """``[B, (2r+1)², h, w]``: for every position of ``x`` ``[B, C, h, w]``, its channel dot products
    with the ``(2r+1)²`` positions of ``ref`` around it (replicate-padded), displacements in
    row-major order (``dy`` outer, ``dx`` inner).

    Computed by one batched matrix product per row (``C·(2r+1)·(w+2r)`` MACs per position,
    of which ``C·(2r+1)²`` are used); the result is a view with the displacements as the
    innermost dimension in memory (channels-last strides).
    """
    _check(x, "x")
    _check(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have one shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    return _row_similarities(x, ref, radius).permute(0, 3, 1, 2)


def correlation_flow(
    x: Tensor,
    ref: Tensor,
    size: tuple[int, int],
    *,
    radius: int = 8,
    regions: int = 2,
    window: int = 0,
    margin: float = 0.0,
    temperature: float = 0.02,
) -> Tensor:
    """The flow ``(dy, dx)`` that aligns the reference to the current frame: ``x[p] ≈ ref[p + flow[p]]``.

    Args:
        x: the current frame's :func:`coarse_features` ``[B, C, h, w]``.
        ref: the reference's, same shape.
        size: ``(H, W)``, the grid the flow is for (``x``'s grid before pooling, or any other
            grid covering the same image); displacements are in its pixels.
        radius: search radius ``r`` in coarse pixels.
        regions: the similarities are averaged over a grid of regions, ``regions`` along the
            longer side (about square), before the soft arg-max: one displacement per region,
            interpolated between region centres. ``0`` keeps one per coarse position.
        window: with ``regions=0``, each position's similarities are averaged over the
            ``(2·window+1)²`` positions around it (replicate-padded) first (``0``: its own).
        margin: confidence (``0``: off): each estimate's displacement is scaled by
            ``min(1, (best similarity - similarity at no displacement) / margin)``, so that
            where no displacement matches clearly better than none (flat or ambiguous
            content) the estimate stays near no motion. Per-position estimates without it are
            worse than no motion at all on real footage.
        temperature: softmax temperature on cosine similarities (lower: closer to a hard
            arg-max).

    Returns:
        ``[B, 2, H, W]`` float32, channel 0 ``dy``, channel 1 ``dx``, with
        ``0 <= y + dy <= H - 1`` and ``0 <= x + dx <= W - 1``.

    Raises:
        ValueError: shapes differ or are not 4-D, or ``radius``/``regions``/``temperature``
            are out of range.
    """
    _check(x, "x")
    _check(ref, "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have one shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be an integer >= 0, got {radius!r}")
    if isinstance(regions, bool) or not isinstance(regions, int) or regions < 0:
        raise ValueError(f"regions must be an integer >= 0, got {regions!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be an integer >= 0, got {window!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    b, c, hc, wc = (int(v) for v in x.shape)  # Python ints, also under tracing
    h, w = int(size[0]), int(size[1])
    k = 2 * radius + 1
    sim = _row_similarities(x.float(), ref.float(), radius)  # [B, hc, wc, k²] cosine similarities
    if regions:
        long = max(hc, wc)
        grid = (max(1, min(hc, int(regions * hc / long + 0.5))), max(1, min(wc, int(regions * wc / long + 0.5))))
        sim = F.adaptive_avg_pool2d(sim.permute(0, 3, 1, 2), grid).permute(0, 2, 3, 1)
    elif window:  # pooled in the channels-last view: displacements stay innermost
        sim = F.avg_pool2d(F.pad(sim.permute(0, 3, 1, 2), (window,) * 4, mode="replicate"), 2 * window + 1, stride=1)
        sim = sim.permute(0, 2, 3, 1)
    rh, rw = int(sim.shape[1]), int(sim.shape[2])
    prob = torch.softmax(sim / temperature, dim=-1)  # [B, rh, rw, k²]
    steps = torch.arange(-radius, radius + 1, device=x.device, dtype=prob.dtype)
    prob = prob.reshape(b, rh, rw, k, k)  # [..., dy, dx] (a view where the layout allows: any device's pooling)
    dy = (prob.sum(-1) * steps).sum(-1) * (h / hc)  # expected displacement, coarse -> fine pixels
    dx = (prob.sum(-2) * steps).sum(-1) * (w / wc)
    flow = torch.stack([dy, dx], dim=-1)  # [B, rh, rw, 2]
    if margin:
        gain = sim.amax(dim=-1) - sim[..., (k * k) // 2]  # best against no displacement, >= 0
        flow = flow * (gain / margin).clamp(max=1.0).unsqueeze(-1)
    flow = flow.permute(0, 3, 1, 2)
    if (rh, rw) != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    ys = torch.arange(h, device=x.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=flow.dtype).view(1, 1, w)
    return torch.stack([(ys + flow[:, 0]).clamp(0, h - 1) - ys, (xs + flow[:, 1]).clamp(0, w - 1) - xs], dim=1)
