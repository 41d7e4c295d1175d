"""Image fidelity metrics (PSNR, SSIM) and a temporal consistency figure, in plain torch.

Every function is batched and runs on whatever device its inputs live on. Images are
``[B, C, H, W]`` (a single ``[C, H, W]`` image counts as ``B = 1``) with values in a
range of width ``data_range``; the default 2.0 suits generators with a ``tanh`` output,
whose frames lie in [-1, 1]. For images in [0, 1] pass ``data_range=1.0``, for 8-bit
images ``data_range=255``.

Sums are accumulated in float64 (float32 on Apple ``mps``, which has no float64) so that
the figures do not depend on the input precision; results come back in the input's
floating dtype.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "temporal_error", "DEFAULT_DATA_RANGE", "check_data_range", "OutputRange"]

# Stabilising constants of Wang et al. (2004), relative to the data range.
_K1 = 0.01
_K2 = 0.03


def _work_dtype(device: torch.device) -> torch.dtype:
    """The accumulation dtype on ``device``: float64 wherever the backend has it."""
    return torch.float32 if device.type == "mps" else torch.float64


def _out_dtype(t: Tensor) -> torch.dtype:
    """The dtype results are returned in: the input's if floating, else the default float."""
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


def _as_batches(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Check that ``x`` and ``y`` are one shape, ``[B, C, H, W]`` or ``[C, H, W]``; return 4-D views.

    Raises:
        ValueError: the shapes differ, or are neither 3-D nor 4-D. The message names both.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"expected two tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(
            f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dim() == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(
            "images must be [B, C, H, W] or [C, H, W], "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


#: the value range that ``evaluate``, ``distill`` and ``calibrate`` assume when none is given: ``tanh`` outputs in [-1, 1]
DEFAULT_DATA_RANGE = 2.0


def check_data_range(data_range: float | None) -> float:
    """``data_range`` as a float, checked: a finite number > 0 (ValueError otherwise); None: :data:`DEFAULT_DATA_RANGE`."""
    if data_range is None:
        return DEFAULT_DATA_RANGE
    if isinstance(data_range, torch.Tensor) and data_range.numel() == 1 and not data_range.is_complex():
        data_range = float(data_range)  # (a computed range, t.max() - t.min())
    if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real):
        raise TypeError(f"data_range must be a number (the width of the outputs' value range: 2.0 for [-1, 1]), got {data_range!r}")
    r = float(data_range)
    if not r > 0 or not math.isfinite(r):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    return r


class OutputRange:
    """The lowest and highest value of the teacher's outputs seen, to tell when the default
    :data:`DEFAULT_DATA_RANGE` does not fit them (see :meth:`mismatch`)."""

    def __init__(self) -> None:
        self.low, self.high = math.inf, -math.inf

    def add(self, image: Tensor) -> None:
        finite = image[torch.isfinite(image)]
        if finite.numel():
            lo, hi = torch.aminmax(finite.detach())
            self.low, self.high = min(self.low, float(lo)), max(self.high, float(hi))

    def mismatch(self, who: str) -> str | None:
        """A message for ``who``'s caller when the outputs do not look like [-1, 1] (the default range): all in
        [0, 1] (PSNR reads 6 dB high), or spread wider than [-1, 1] by a quarter (PSNR reads low); None if they fit."""
        lo, hi = self.low, self.high
        if not lo <= hi:
            return None
        seen = f"the teacher's outputs on these clips lie in [{lo:.4g}, {hi:.4g}]"
        if lo >= 0 and hi <= 1:
            return (
                f"{who}: {seen}, within [0, 1], but PSNR and SSIM were taken over the default range [-1, 1] "
                f"(data_range={DEFAULT_DATA_RANGE:g}): if the generator's outputs are in [0, 1], pass data_range=1.0 "
                "(the PSNR here reads 6.02 dB high); pass data_range=2.0 to keep [-1, 1] without this warning"
            )
        if hi - lo > 1.25 * DEFAULT_DATA_RANGE:
            return (
                f"{who}: {seen}, wider than the default range [-1, 1] (data_range={DEFAULT_DATA_RANGE:g}) that PSNR and "
                "SSIM were taken over: pass data_range= the width of the generator's output range (255 for 8-bit values; "
                f"for outputs without a fixed range, e.g. the spread seen here, data_range={hi - lo:.4g})"
            )
        return None


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio of each image pair, in dB.

    ``PSNR = 10 * log10(data_range**2 / MSE)`` with the mean squared error taken over
    channels and pixels of each image separately.

    Args:
        x, y: images ``[B, C, H, W]`` (or ``[C, H, W]``, treated as ``B = 1``), one shape.
        data_range: width of the value range (max - min); 2.0 for images in [-1, 1].

    Returns:
        ``[B]`` PSNR in dB, in ``x``'s floating dtype; ``inf`` where the images are identical.

    Raises:
        ValueError: the shapes differ or are not 3-/4-D, or ``data_range`` is not positive.
    """
    x, y = _as_batches(x, y)
    r = check_data_range(data_range)
    work = _work_dtype(x.device)
    mse = (x.to(work) - y.to(work)).square().flatten(1).mean(dim=1)
    # mse == 0 gives r**2 / 0 = inf and log10(inf) = inf, which is the intended answer.
    return (10.0 * torch.log10(r * r / mse)).to(_out_dtype(x))


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap."""
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return g / g.sum()


# Outputs per tile of the banded-matrix correlation below: large enough for BLAS to be
# efficient, small enough that the band's zeros cost little.
_TILE = 64


def _correlate_last(t: Tensor, taps: Tensor) -> Tensor:
    """'Valid' 1-D correlation of ``t [..., N]`` with ``taps [k]`` along the last dim -> ``[..., N - k + 1]``.

    Done as a matrix product of overlapping tiles of ``t`` with a banded (Toeplitz) matrix:
    float64 convolutions are very slow on CPU, float64 matrix products are not.
    """
    k, n = taps.numel(), t.shape[-1]
    out = n - k + 1
    tile = min(_TILE, out)
    n_tiles = -(-out // tile)
    pad = n_tiles * tile + k - 1 - n  # zeros only ever reach outputs past `out`, cropped below
    if pad:
        t = F.pad(t, (0, pad))
    windows = t.unfold(-1, tile + k - 1, tile)  # [..., n_tiles, tile + k - 1]
    rows = torch.arange(k, device=t.device)[:, None] + torch.arange(tile, device=t.device)[None, :]
    cols = torch.arange(tile, device=t.device).expand(k, tile)
    band = torch.zeros(tile + k - 1, tile, dtype=t.dtype, device=t.device)
    band[rows, cols] = taps[:, None].expand(k, tile)  # band[j + i, j] = taps[i]
    return (windows @ band).flatten(-2)[..., :out]


def _gaussian_blur_valid(t: Tensor, taps: Tensor) -> Tensor:
    """Separable Gaussian local mean of ``t [..., H, W]``, valid region ``[..., H-k+1, W-k+1]``."""
    t = _correlate_last(t, taps)
    return _correlate_last(t.transpose(-1, -2), taps).transpose(-1, -2)


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli, 2004) of each image pair.

    Local means, variances and the covariance are Gaussian-weighted averages over a
    ``window x window`` neighbourhood (``sigma`` in pixels), computed per channel (a
    depthwise filtering, done as two separable 1-D passes, which is exactly equivalent
    to a depthwise conv2d with the 2-D Gaussian) over the *valid* region only (no
    padding), so the SSIM map is
    ``[B, C, H - window + 1, W - window + 1]``. With ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``
    (``L = data_range``) the map is::

        (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    and the score is its mean over channels and positions. Variances use the population
    (not the sample) normalisation, as in the paper.

    Small images: if ``H`` or ``W`` is smaller than ``window``, the window shrinks to the
    largest odd size not exceeding ``min(H, W)`` (``sigma`` is kept), so an SSIM is still
    defined; a 1-pixel-wide image ends up with a 1x1 window.

    Args:
        x, y: images ``[B, C, H, W]`` (or ``[C, H, W]``, treated as ``B = 1``), one shape.
        data_range: width of the value range (max - min); 2.0 for images in [-1, 1].
        window: side of the Gaussian window in pixels; odd, >= 1.
        sigma: standard deviation of the Gaussian window in pixels, > 0.

    Returns:
        ``[B]`` SSIM in ``x``'s floating dtype; 1 for identical images, at most 1.

    Raises:
        ValueError: bad shapes, an even or non-positive window, or a non-positive sigma
            or data_range.
    """
    x, y = _as_batches(x, y)
    r = check_data_range(data_range)
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    _, c, h, w = x.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"images must have at least one channel and pixel, got {tuple(x.shape)}")
    size = min(int(window), h, w)
    if size % 2 == 0:
        size -= 1

    work = _work_dtype(x.device)
    taps = _gaussian_window(size, float(sigma), work, x.device)
    xw, yw = x.to(work), y.to(work)
    # All five local means in one pass: the window is the same for every channel and
    # separable, so this equals a depthwise conv2d with the 2-D Gaussian outer(taps, taps).
    stats = _gaussian_blur_valid(torch.stack([xw, yw, xw * xw, yw * yw, xw * yw]), taps)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.unbind(0)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy

    c1, c2 = (_K1 * r) ** 2, (_K2 * r) ** 2
    num = (2.0 * mu_xy + c1) * (2.0 * cov_xy + c2)
    den = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(dim=1).to(_out_dtype(x))


def temporal_error(outputs: Tensor, references: Tensor) -> float:
    """Temporal consistency error of a frame sequence against a reference sequence.

    ``mean |(o[t+1] - o[t]) - (r[t+1] - r[t])|`` over ``t = 0 .. T-2`` and all channels and
    pixels: 0 when the output changes from frame to frame exactly as the reference does
    (even if the frames themselves differ by a fixed offset), large when it flickers.

    Args:
        outputs, references: sequences ``[T, C, H, W]`` of one shape, ``T >= 2``, in the
            same value units (the result is in those units, e.g. [-1, 1] pixel units).

    Returns:
        The mean absolute difference of frame-to-frame changes, a Python float.

    Raises:
        ValueError: the shapes differ, are not 4-D, or hold fewer than two frames.
    """
    if not isinstance(outputs, Tensor) or not isinstance(references, Tensor):
        raise TypeError(
            f"expected two tensors, got {type(outputs).__name__} and {type(references).__name__}"
        )
    if outputs.shape != references.shape or outputs.dim() != 4:
        raise ValueError(
            "need two [T, C, H, W] sequences of the same shape, "
            f"got {tuple(outputs.shape)} and {tuple(references.shape)}"
        )
    if outputs.shape[0] < 2:
        raise ValueError(
            f"need at least 2 frames to compare changes, got {tuple(outputs.shape)} "
            f"and {tuple(references.shape)}"
        )
    work = _work_dtype(outputs.device)
    o, ref = outputs.to(work), references.to(work)
    diff = (o[1:] - o[:-1]) - (ref[1:] - ref[:-1])
    return float(diff.abs().mean())
