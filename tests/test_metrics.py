"""Tests of shortcutify.train.metrics: PSNR, SSIM (against a numpy reference) and temporal error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from shortcutify.train.metrics import psnr, ssim, temporal_error


# ---------------------------------------------------------------------------------------
# A direct float64 numpy SSIM, written from the paper's formulas, to check the torch one.
# ---------------------------------------------------------------------------------------
def _np_gauss2d(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) / 2.0
    g = np.array([math.exp(-((i - half) ** 2) / (2.0 * sigma * sigma)) for i in range(size)])
    g2 = np.outer(g, g)
    return g2 / g2.sum()


def _np_filter(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """'valid' 2-D correlation of ``img [H, W]`` with ``w [k, k]``."""
    windows = sliding_window_view(img, w.shape)  # [H-k+1, W-k+1, k, k]
    return (windows * w).sum(axis=(-2, -1))


def _np_ssim(a: np.ndarray, b: np.ndarray, data_range: float, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two ``[C, H, W]`` float64 images: mean over channels of the mean SSIM map."""
    w = _np_gauss2d(size, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    per_channel = []
    for ch in range(a.shape[0]):
        x, y = a[ch], b[ch]
        mx, my = _np_filter(x, w), _np_filter(y, w)
        vx = _np_filter(x * x, w) - mx**2
        vy = _np_filter(y * y, w) - my**2
        cxy = _np_filter(x * y, w) - mx * my
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        per_channel.append(smap.mean())
    return float(np.mean(per_channel))


# --------------------------------------------------------------------------------- PSNR
@pytest.mark.parametrize("c", [0.01, 0.1, 0.5])
def test_psnr_matches_formula_for_a_constant_offset(c):
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = x + c  # MSE = c**2 exactly (up to float32 rounding of the offset)
    expected = 10 * math.log10(2.0**2 / c**2)
    out = psnr(x, y)
    assert out.shape == (2,)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((2,), expected), atol=1e-3, rtol=0)


def test_psnr_data_range_and_known_mse():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    y = x.clone()
    y[..., :2, :] = 10.0  # half the pixels off by 10: MSE = 50
    assert psnr(x, y, data_range=255.0).item() == pytest.approx(10 * math.log10(255.0**2 / 50.0), abs=1e-9)


def test_psnr_identical_is_inf():
    x = torch.randn(3, 3, 8, 8)
    out = psnr(x, x.clone())
    assert torch.isinf(out).all() and (out > 0).all()


def test_psnr_accepts_single_image():
    x = torch.rand(3, 8, 8)
    out = psnr(x, x + 0.1)
    assert out.shape == (1,)
    assert out.item() == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-3)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\).*\(1, 3, 16, 15\)"):
        fn(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15))


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_wrong_rank_raises(fn):
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        fn(torch.zeros(16, 16), torch.zeros(16, 16))
    with pytest.raises(ValueError, match=r"\(1, 1, 3, 16, 16\)"):
        fn(torch.zeros(1, 1, 3, 16, 16), torch.zeros(1, 1, 3, 16, 16))


def test_bad_data_range_raises():
    x = torch.zeros(1, 1, 12, 12)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, data_range=-1)


# --------------------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one():
    x = torch.rand(4, 3, 32, 40) * 2 - 1
    out = ssim(x, x.clone())
    assert out.shape == (4,) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones(4), atol=1e-6, rtol=0)


def test_ssim_constant_images_equal_is_one_and_float64_kept():
    x = torch.full((1, 1, 16, 16), 0.3, dtype=torch.float64)
    out = ssim(x, x.clone())
    assert out.dtype == torch.float64
    assert out.item() == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(11, 24),
    w=st.integers(11, 24),
    noise=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_ssim_matches_numpy_reference(b, c, h, w, noise, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(b, c, h, w))
    y = np.clip(x + noise * rng.standard_normal((b, c, h, w)), -1, 1)
    out = ssim(torch.from_numpy(x), torch.from_numpy(y))
    expected = np.array([_np_ssim(x[i], y[i], data_range=2.0) for i in range(b)])
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-10)
    # float32 inputs give the same figure to float32 precision
    out32 = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), expected, rtol=0, atol=1e-5)


def test_ssim_matches_reference_with_other_range_and_window():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, size=(1, 2, 20, 22))
    y = np.clip(x + 20 * rng.standard_normal(x.shape), 0, 255)
    out = ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=255.0, window=7, sigma=1.0)
    assert out.item() == pytest.approx(_np_ssim(x[0], y[0], 255.0, size=7, sigma=1.0), abs=1e-10)


def test_ssim_window_shrinks_to_largest_odd_size_that_fits():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(1, 3, 8, 20))  # H = 8 < 11: window 7
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    out = ssim(tx, ty)
    assert out.item() == pytest.approx(_np_ssim(x[0], y[0], 2.0, size=7), abs=1e-10)
    torch.testing.assert_close(out, ssim(tx, ty, window=7))
    # a 1-pixel-high image still gets a (1x1) window and a finite score
    assert torch.isfinite(ssim(tx[..., :1, :], ty[..., :1, :])).all()


def test_ssim_rejects_bad_window():
    x = torch.zeros(1, 1, 16, 16)
    for bad in (0, 4, -3):
        with pytest.raises(ValueError, match="window"):
            ssim(x, x, window=bad)
    with pytest.raises(ValueError, match="sigma"):
        ssim(x, x, sigma=0.0)


def test_ssim_decreases_as_noise_grows():
    torch.manual_seed(0)
    # a smooth image (so that structure is there to lose)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 64), indexing="ij")
    img = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy])[None] * 0.8
    base_noise = torch.randn_like(img)
    scores = [ssim(img, (img + s * base_noise).clamp(-1, 1)).item() for s in (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] < 0.5


def test_batch_entries_are_independent():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 20, 20) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    full_s, full_p = ssim(x, y), psnr(x, y)
    for i in range(3):
        torch.testing.assert_close(full_s[i : i + 1], ssim(x[i : i + 1], y[i : i + 1]))
        torch.testing.assert_close(full_p[i : i + 1], psnr(x[i : i + 1], y[i : i + 1]))
    # changing one entry leaves the others' scores untouched
    y2 = y.clone()
    y2[1] = -y2[1]
    s2, p2 = ssim(x, y2), psnr(x, y2)
    torch.testing.assert_close(s2[[0, 2]], full_s[[0, 2]])
    torch.testing.assert_close(p2[[0, 2]], full_p[[0, 2]])
    assert s2[1] < full_s[1] and p2[1] < full_p[1]


def test_metrics_keep_gradients_and_device():
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    (ssim(x, y).sum() + psnr(x, y).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------ temporal error
def test_temporal_error_zero_when_equal():
    seq = torch.randn(6, 3, 8, 8)
    assert temporal_error(seq, seq.clone()) == 0.0


def test_temporal_error_ignores_a_fixed_offset():
    seq = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    assert temporal_error(seq + 0.3, seq) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("drift", [0.05, -0.2])
def test_temporal_error_equals_per_frame_drift(drift):
    ref = torch.randn(7, 3, 8, 8, dtype=torch.float64)
    t = torch.arange(7, dtype=torch.float64)[:, None, None, None]
    out = ref + drift * t  # each frame drifts by `drift` more than the last
    assert temporal_error(out, ref) == pytest.approx(abs(drift), abs=1e-12)
    assert isinstance(temporal_error(out, ref), float)


def test_temporal_error_validates():
    with pytest.raises(ValueError, match=r"\(4, 3, 8, 8\).*\(4, 3, 8, 9\)"):
        temporal_error(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        temporal_error(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="2 frames"):
        temporal_error(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("hw", [(11, 11), (40, 75), (140, 203)])
def test_ssim_equals_depthwise_conv2d_formulation(hw):
    """The separable, tiled filtering equals a plain depthwise conv2d, across tile borders."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, *hw, dtype=torch.float64) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    r = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()
    k = torch.outer(g, g).expand(3, 1, 11, 11)

    def f(t):
        return torch.nn.functional.conv2d(t, k, groups=3)

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.02**2, 0.06**2
    smap = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    torch.testing.assert_close(ssim(x, y), smap.mean(dim=(1, 2, 3)), atol=1e-12, rtol=0)


def test_the_output_image_is_a_frame_before_a_stack_and_a_stack_with_its_channels_first():
    from shortcutify.train import output_image

    aux, image = torch.randn(1, 2, 3, 4, 5), torch.randn(1, 3, 8, 8)
    assert output_image((aux, image)) is image  # a 4-D image wins over an earlier 5-D leaf
    stack = torch.randn(2, 3, 4, 8, 8)  # [B, C, D, H, W]
    assert torch.equal(output_image({"video": stack}), stack.flatten(1, 2))
    last = stack.permute(0, 2, 3, 4, 1)  # [B, D, H, W, C]
    assert torch.equal(output_image(last), last.movedim(-1, 1).flatten(1, 2))
