"""Data-dependent starting weights for a reduction conv: the principal components of its input.

A block's reductions (a 1×1 conv, or a 2×2 stride-2 conv, each followed by ReLU) take a tap of
``C`` channels to the block's width ``h < C``. Randomly initialised, they keep an arbitrary
``h``-dimensional projection of the tap and ReLU discards about half of it, so what the block
can learn in its first hundreds of steps depends on the draw. :class:`PatchMoments` gathers
the mean and covariance of the conv's input patches over sample frames (batch by batch, in
float64), and :func:`principal_init_` sets the conv to the ``h`` leading principal
components (at the scale of PyTorch's default initialisation on that input), centred and
shifted by ``shift`` standard deviations so that ReLU passes nearly all of each component
(``benchmarks/RESULTS.md``, "Data-dependent start", has the choice of ``shift`` measured).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PatchMoments", "principal_components", "principal_init_", "scaled_rows", "set_rows_"]


class PatchMoments:
    """Running first and second moments of a conv's input patches.

    ``update(x)`` takes an input ``[B, C, H, W]`` of ``conv`` (ungrouped, no padding, no
    dilation: the reductions' kind); patches are the ``C·kh·kw`` values each output position
    reads.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding not in ((0, 0), "valid"):
            raise ValueError(f"principal components need an ungrouped conv without padding or dilation, got {conv}")
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        dim = conv.in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.count = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, x: Tensor) -> None:
        """Add the patches of ``x [B, C, H, W]``."""
        if x.dim() != 4:
            raise ValueError(f"expected an input [B, C, H, W], got shape {tuple(x.shape)}")
        cols = F.unfold(x.detach().double(), self.kernel_size, stride=self.stride)  # [B, D, L]
        cols = cols.transpose(1, 2).reshape(-1, cols.shape[1]).cpu()
        if cols.shape[1] != self.total.shape[0]:
            raise ValueError(f"patches of {cols.shape[1]} values, the conv reads {self.total.shape[0]}")
        self.count += cols.shape[0]
        self.total += cols.sum(0)
        self.outer += cols.T @ cols

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        """``(mean [D], covariance [D, D])`` of the patches so far (float64)."""
        if self.count < 2:
            raise ValueError("principal components need at least 2 patches")
        mean = self.total / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def principal_components(moments: PatchMoments, count: int, shift: float) -> tuple[Tensor, Tensor]:
    """The ``count`` leading principal components of the patches, as a reduction's rows and biases.

    Returns ``(rows [m, D], bias [m])`` in float64, ``m = min(count, D)``. Row ``i`` is the
    ``i``-th eigenvector of the patch covariance ``Σ`` (sign chosen so that its largest entry is
    positive), all rows scaled by one factor so that the outputs' mean variance is the second
    moment that PyTorch's default (fan-in uniform) initialisation of the conv passes on this
    input, ``(tr Σ + |μ|²) / (3 D)``: the layers after the reduction see inputs of the scale they
    are initialised for, whatever the taps' scale. ``bias`` centres each output and adds
    ``shift`` times its standard deviation (``shift = 2``: ReLU passes over 97% of a Gaussian
    component).

    Raises:
        FloatingPointError: the patches were not finite (nothing to derive from them).
    """
    mean, cov = moments.mean_and_covariance()
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(cov).all())):
        raise FloatingPointError("the patches are not finite (NaN or Inf): no principal components to take")
    _, vectors = torch.linalg.eigh(cov)  # ascending
    vectors = vectors.flip(1)[:, : min(count, mean.numel())].T  # [m, D], leading first
    vectors = vectors * torch.sign(vectors.gather(1, vectors.abs().argmax(1, keepdim=True)))
    return scaled_rows(vectors, mean, cov, shift)


def scaled_rows(directions: Tensor, mean: Tensor, cov: Tensor, shift: float) -> tuple[Tensor, Tensor]:
    """Orthonormal ``directions [m, D]`` as a reduction's ``(rows [m, D], bias [m])`` for patches of
    ``mean [D]`` and covariance ``cov [D, D]``: all rows scaled by one factor so that the outputs' mean
    variance is ``(tr Σ + |μ|²) / (3 D)`` (see :func:`principal_components`), each output centred and
    raised by ``shift`` of its standard deviations."""
    var = torch.einsum("md,de,me->m", directions, cov, directions).clamp_min(0.0)
    target = (torch.trace(cov) + mean @ mean) / (3 * mean.numel())
    scale = (target / var.mean()).sqrt() if bool(var.mean() > 0) else torch.ones((), dtype=var.dtype)
    rows = directions * scale
    return rows, -(rows @ mean) + shift * scale * var.sqrt()


@torch.no_grad()
def set_rows_(conv: nn.Conv2d, rows: Tensor, bias: Tensor) -> nn.Conv2d:
    """Set ``conv``'s first ``len(rows)`` output channels: weights ``rows [m, C·kh·kw]`` and ``bias [m]``."""
    m = rows.shape[0]
    conv.weight.view(conv.out_channels, -1)[:m] = rows.to(conv.weight)
    conv.bias[:m] = bias.to(conv.bias)  # type: ignore[index]
    return conv


def principal_init_(conv: nn.Conv2d, moments: PatchMoments, shift: float) -> nn.Conv2d:
    """Set ``conv`` (``out_channels = h``) to the ``h`` leading principal components of its input
    (:func:`principal_components`); where the input has fewer than ``h`` dimensions the remaining
    output channels stay as they were. Returns ``conv``.

    Raises:
        ValueError: ``conv`` has no bias (it centres and shifts the outputs).
        FloatingPointError: the patches were not finite; ``conv`` is unchanged.
    """
    if conv.bias is None:
        raise ValueError("principal_init_ needs a conv with a bias (it centres and shifts the outputs)")
    return set_rows_(conv, *principal_components(moments, conv.out_channels, shift))
