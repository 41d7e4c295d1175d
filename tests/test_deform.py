"""Specification tests for ``shortcutify.ops.deform`` (DCNv2 with torchvision semantics).

The reference below implements ``torchvision.ops.deform_conv2d`` literally: for
each output pixel, kernel tap and channel it computes the deformed sampling
position and reads the input with bilinear interpolation, where

* a sample with ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W`` is 0, and
* otherwise each of the four neighbouring pixels outside the image contributes 0.

Offsets are interleaved ``(dy, dx)`` per kernel tap (taps row-major,
``k = i*kw + j``) per offset group: channel ``g*2*K + 2*k + {0: dy, 1: dx}``;
mask channel ``g*K + k``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shortcutify.ops.deform import (
    DeformConv2d,
    columns_matmul,
    deform_columns,
    deform_conv2d,
    unfold_columns,
)


# --------------------------------------------------------------------------- #
# Naive reference
# --------------------------------------------------------------------------- #
def _bilinear_ref(img: list[list[float]], y: float, x: float) -> float:
    """torchvision's bilinear read of one channel ``img`` ([H][W]) at ``(y, x)``."""
    h, w = len(img), len(img[0])
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = y0 + 1, x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    val = 0.0
    for yy, xx, wgt in ((y0, x0, hy * hx), (y0, x1, hy * lx), (y1, x0, ly * hx), (y1, x1, ly * lx)):
        if 0 <= yy < h and 0 <= xx < w:
            val += wgt * img[yy][xx]
    return val


def deform_conv2d_ref(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Loop-by-loop float64 reference of torchvision.ops.deform_conv2d."""
    b_, cin, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = cin // cin_g
    cout_g = cout // groups
    k_ = kh * kw
    n_off_groups = offset.shape[1] // (2 * k_)
    ch_per_off_group = cin // n_off_groups
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    assert offset.shape == (b_, 2 * n_off_groups * k_, ho, wo)

    xs = x.double().tolist()
    offs = offset.double().tolist()
    ms = mask.double().tolist() if mask is not None else None
    ws = weight.double().tolist()
    out = [[[[0.0] * wo for _ in range(ho)] for _ in range(cout)] for _ in range(b_)]
    for b in range(b_):
        # sampled[c][k][oy][ox]
        sampled = [[[[0.0] * wo for _ in range(ho)] for _ in range(k_)] for _ in range(cin)]
        for c in range(cin):
            g = c // ch_per_off_group
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    for oy in range(ho):
                        for ox in range(wo):
                            dy = offs[b][g * 2 * k_ + 2 * k][oy][ox]
                            dx = offs[b][g * 2 * k_ + 2 * k + 1][oy][ox]
                            yy = oy * sh - ph + i * dh + dy
                            xx = ox * sw - pw + j * dw + dx
                            v = _bilinear_ref(xs[b][c], yy, xx)
                            if ms is not None:
                                v *= ms[b][g * k_ + k][oy][ox]
                            sampled[c][k][oy][ox] = v
        for co in range(cout):
            grp = co // cout_g
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if bias is None else float(bias[co])
                    for ci in range(cin_g):
                        c = grp * cin_g + ci
                        for i in range(kh):
                            for j in range(kw):
                                acc += ws[co][ci][i][j] * sampled[c][i * kw + j][oy][ox]
                    out[b][co][oy][ox] = acc
    return torch.tensor(out, dtype=torch.float64).reshape(b_, cout, ho, wo)


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


# --------------------------------------------------------------------------- #
# Hypothesis: agreement with the reference
# --------------------------------------------------------------------------- #
@st.composite
def deform_cases(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    off_groups = draw(st.sampled_from([1, 2, 4]))
    lcm = groups * off_groups // math.gcd(groups, off_groups)
    cin = draw(st.sampled_from([c for c in (1, 2, 3, 4) if c % lcm == 0]))  # lcm <= 4
    cout = draw(st.sampled_from([c for c in (1, 2, 3, 4) if c % groups == 0]))
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    kh = draw(st.integers(1, 3))
    kw = draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
    # Make the configuration valid by growing the padding if necessary.
    while ho < 1:
        padding = (padding[0] + 1, padding[1])
        ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    while wo < 1:
        padding = (padding[0], padding[1] + 1)
        wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
    use_mask = draw(st.booleans())
    use_bias = draw(st.booleans())
    # "snap" rounds some offsets to multiples of 0.5, hitting integer sample
    # positions and the exact borders y == -1 / y == H.
    snap = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(
        groups=groups, off_groups=off_groups, cin=cin, cout=cout, b=b, h=h, w=w,
        kh=kh, kw=kw, stride=stride, padding=padding, dilation=dilation, ho=ho, wo=wo,
        use_mask=use_mask, use_bias=use_bias, snap=snap, seed=seed,
    )


def _make_tensors(case, dtype=torch.float64):
    gen = torch.Generator().manual_seed(case["seed"])
    k = case["kh"] * case["kw"]
    x = torch.randn(case["b"], case["cin"], case["h"], case["w"], generator=gen, dtype=dtype)
    offset = (
        torch.rand(case["b"], 2 * case["off_groups"] * k, case["ho"], case["wo"], generator=gen, dtype=dtype)
        * 6.0
        - 3.0
    )
    if case["snap"]:
        snapped = torch.round(offset * 2.0) / 2.0
        choose = torch.rand(offset.shape, generator=gen) < 0.5
        offset = torch.where(choose, snapped, offset)
    weight = torch.randn(
        case["cout"], case["cin"] // case["groups"], case["kh"], case["kw"], generator=gen, dtype=dtype
    )
    bias = torch.randn(case["cout"], generator=gen, dtype=dtype) if case["use_bias"] else None
    mask = (
        torch.rand(case["b"], case["off_groups"] * k, case["ho"], case["wo"], generator=gen, dtype=dtype)
        if case["use_mask"]
        else None
    )
    return x, offset, weight, bias, mask


@settings(max_examples=40, deadline=None)
@given(deform_cases())
def test_matches_naive_reference(case):
    x, offset, weight, bias, mask = _make_tensors(case)
    got = deform_conv2d(
        x, offset, weight, bias,
        stride=case["stride"], padding=case["padding"], dilation=case["dilation"], mask=mask,
    )
    want = deform_conv2d_ref(x, offset, weight, bias, case["stride"], case["padding"], case["dilation"], mask)
    assert got.shape == (case["b"], case["cout"], case["ho"], case["wo"])
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_reference_hand_example():
    """Hand-computed bilinear samples (checks the reference and the implementation)."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    off = torch.full((1, 2, 2, 2), 0.5, dtype=torch.float64)  # every sample moves by (+.5, +.5)
    want = torch.tensor(
        [[[[0.25 * (1 + 2 + 3 + 4),  # (0.5, 0.5): all four corners inside
            0.25 * (2 + 4)],  # (0.5, 1.5): right column outside
           [0.25 * (3 + 4),  # (1.5, 0.5): bottom row outside
            0.25 * 4]]]],  # (1.5, 1.5): only (1, 1) inside
        dtype=torch.float64,
    )
    torch.testing.assert_close(deform_conv2d(x, off, w), want, atol=1e-12, rtol=0)
    ref = deform_conv2d_ref(x, off, w, None, (1, 1), (0, 0), (1, 1), None)
    torch.testing.assert_close(ref, want, atol=1e-12, rtol=0)

    # Samples exactly on y == H or x == -1 are zero; two offset groups, groups=2 conv.
    ones = torch.ones(1, 2, 2, 2, dtype=torch.float64)
    w2 = torch.ones(2, 1, 1, 1, dtype=torch.float64)
    off2 = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    off2[:, 0] = 2.0  # group 0: dy = 2 -> row 0 samples at y = 2 == H
    off2[:, 3] = -2.0  # group 1: dx = -2 -> column 1 samples at x = -1
    out = deform_conv2d(ones, off2, w2)
    assert out[0, 0, 0, 0] == 0.0 and out[0, 0, 0, 1] == 0.0
    assert out[0, 1, 0, 1] == 0.0 and out[0, 1, 1, 1] == 0.0
    torch.testing.assert_close(out, deform_conv2d_ref(ones, off2, w2, None, (1, 1), (0, 0), (1, 1), None))


# --------------------------------------------------------------------------- #
# Zero offsets == ordinary convolution
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "cin,cout,groups,k,stride,padding,dilation,off_groups",
    [
        (3, 5, 1, 3, 1, 1, 1, 1),
        (4, 6, 2, 3, 2, 1, 1, 2),
        (4, 4, 4, (3, 2), (2, 1), (1, 0), (2, 1), 4),
        (6, 3, 3, 1, 1, 0, 1, 2),
        (2, 4, 1, 3, 1, 2, 2, 1),
        (8, 8, 2, (1, 3), 1, (0, 1), 1, 4),
    ],
)
def test_zero_offset_equals_conv2d(cin, cout, groups, k, stride, padding, dilation, off_groups):
    torch.manual_seed(0)
    x = torch.randn(2, cin, 9, 7)
    weight = torch.randn(cout, cin // groups, *((k, k) if isinstance(k, int) else k))
    bias = torch.randn(cout)
    want = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    kk = weight.shape[2] * weight.shape[3]
    offset = torch.zeros(2, 2 * off_groups * kk, *want.shape[-2:])
    got = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_zero_offset_float64_close_to_conv2d():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 18, 5, 6, dtype=torch.float64)
    got = deform_conv2d(x, offset, weight, padding=1)
    torch.testing.assert_close(got, F.conv2d(x, weight, padding=1), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- #
# Mask semantics
# --------------------------------------------------------------------------- #
def test_mask_of_ones_equals_no_mask_and_scales_linearly():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    g, k = 2, 9
    offset = torch.randn(2, 2 * g * k, 6, 5, dtype=torch.float64)
    ones = torch.ones(2, g * k, 6, 5, dtype=torch.float64)
    no_mask = deform_conv2d(x, offset, weight, padding=1)
    torch.testing.assert_close(deform_conv2d(x, offset, weight, padding=1, mask=ones), no_mask)
    torch.testing.assert_close(
        deform_conv2d(x, offset, weight, padding=1, mask=0.3 * ones), 0.3 * no_mask
    )
    torch.testing.assert_close(
        deform_conv2d(x, offset, weight, padding=1, mask=torch.zeros_like(ones)),
        torch.zeros_like(no_mask),
    )
    # Linearity in the mask (no bias): f(a*m1 + b*m2) = a*f(m1) + b*f(m2).
    m1, m2 = torch.rand_like(ones), torch.rand_like(ones)
    lhs = deform_conv2d(x, offset, weight, padding=1, mask=2.0 * m1 - 0.5 * m2)
    rhs = 2.0 * deform_conv2d(x, offset, weight, padding=1, mask=m1) - 0.5 * deform_conv2d(
        x, offset, weight, padding=1, mask=m2
    )
    torch.testing.assert_close(lhs, rhs)


def test_mask_channel_layout_per_tap_and_group():
    """Mask channel g*K + k multiplies exactly tap k of offset group g."""
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    weight = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 2 * 2 * 9, 4, 4, dtype=torch.float64)
    g, k = 1, 5
    mask = torch.zeros(1, 18, 4, 4, dtype=torch.float64)
    mask[:, g * 9 + k] = 1.0
    got = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    w_only = torch.zeros_like(weight)
    w_only[:, 1, k // 3, k % 3] = weight[:, 1, k // 3, k % 3]  # channel 1 is offset group 1
    torch.testing.assert_close(got, F.conv2d(x, w_only, padding=1))


# --------------------------------------------------------------------------- #
# Integer offsets are exact shifts
# --------------------------------------------------------------------------- #
def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., y, x] = x[..., y + dy, x + dx], zero where out of range."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)))
    return padded[..., abs(dy) + dy: abs(dy) + dy + h, abs(dx) + dx: abs(dx) + dx + w]


@pytest.mark.parametrize("dy,dx", [(0, 1), (1, 0), (-1, 0), (0, -2), (2, -1), (-3, 3), (0, 7)])
def test_integer_offsets_shift(dy, dx):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    offset = torch.zeros(2, 2 * 9, 6, 7, dtype=torch.float64)
    offset[:, 0::2] = dy
    offset[:, 1::2] = dx
    # Without padding: conv of the image shifted by (dy, dx) with zero fill.
    got = deform_conv2d(x, offset[..., 1:-1, 1:-1], weight, bias)
    want = F.conv2d(_shift(x, dy, dx), weight, bias)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # With padding, the padded canvas is what gets shifted (samples in the padding
    # region can land inside the image).
    got = deform_conv2d(x, offset, weight, bias, padding=1)
    want = F.conv2d(_shift(F.pad(x, (1, 1, 1, 1)), dy, dx), weight, bias)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_offset_channel_order_is_dy_then_dx():
    """With a 1x1 kernel, channel 0 moves vertically and channel 1 horizontally."""
    x = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    off = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    off[:, 0] = 1.0
    torch.testing.assert_close(deform_conv2d(x, off, w), _shift(x, 1, 0), atol=1e-12, rtol=0)
    off = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    off[:, 1] = 1.0
    torch.testing.assert_close(deform_conv2d(x, off, w), _shift(x, 0, 1), atol=1e-12, rtol=0)


def test_far_offsets_give_bias_only():
    x = torch.randn(1, 2, 4, 4)
    weight = torch.randn(3, 2, 3, 3)
    bias = torch.randn(3)
    offset = torch.full((1, 18, 4, 4), 100.0)
    got = deform_conv2d(x, offset, weight, bias, padding=1)
    torch.testing.assert_close(got, bias.view(1, 3, 1, 1).expand(1, 3, 4, 4))


# --------------------------------------------------------------------------- #
# Column helpers
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "k,stride,padding,dilation,off_groups",
    [(3, 1, 1, 1, 1), ((2, 3), (2, 1), (0, 2), (1, 2), 2), (1, 2, 0, 1, 4), (3, 2, 2, 2, 1)],
)
def test_unfold_columns_equals_zero_offset_deform_columns(k, stride, padding, dilation, off_groups):
    torch.manual_seed(4)
    x = torch.randn(2, 4, 7, 6)
    kh, kw = (k, k) if isinstance(k, int) else k
    cols = unfold_columns(x, k, stride, padding, dilation)
    b, c, kk, p = cols.shape
    assert (b, c, kk) == (2, 4, kh * kw)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    ho, wo = _out_size(7, kh, sh, ph, dh), _out_size(6, kw, sw, pw, dw)
    assert p == ho * wo
    offset = torch.zeros(2, 2 * off_groups * kh * kw, ho, wo)
    dcols = deform_columns(x, offset, k, stride, padding, dilation)
    torch.testing.assert_close(dcols, cols, atol=1e-6, rtol=1e-6)
    # Mask of ones is a no-op on the columns too.
    ones = torch.ones(2, off_groups * kh * kw, ho, wo)
    torch.testing.assert_close(deform_columns(x, offset, k, stride, padding, dilation, ones), dcols)


def test_columns_pipeline_equals_deform_conv2d_with_groups():
    torch.manual_seed(5)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    weight = torch.randn(6, 2, 3, 3, dtype=torch.float64)  # groups = 2
    bias = torch.randn(6, dtype=torch.float64)
    offset = torch.randn(2, 2 * 2 * 9, 3, 3, dtype=torch.float64)
    mask = torch.rand(2, 2 * 9, 3, 3, dtype=torch.float64)
    cols = deform_columns(x, offset, 3, stride=2, padding=1, mask=mask)
    assert cols.shape == (2, 4, 9, 9)
    got = columns_matmul(cols, weight, bias, groups=2, out_hw=(3, 3))
    want = deform_conv2d(x, offset, weight, bias, stride=2, padding=1, mask=mask)
    torch.testing.assert_close(got, want)
    # Columns are linear, so two modulated applications sharing a weight can be fused.
    mask2 = torch.rand_like(mask)
    fused = columns_matmul(
        cols + deform_columns(x, offset, 3, stride=2, padding=1, mask=mask2), weight, None, 2, (3, 3)
    )
    sep = deform_conv2d(x, offset, weight, None, 2, 1, 1, mask) + deform_conv2d(
        x, offset, weight, None, 2, 1, 1, mask2
    )
    torch.testing.assert_close(fused, sep)


def test_columns_matmul_validates():
    cols = torch.randn(1, 4, 9, 12)
    with pytest.raises(ValueError, match="out_hw"):
        columns_matmul(cols, torch.randn(2, 4, 3, 3), out_hw=(3, 5))
    with pytest.raises(ValueError, match="out_hw"):
        columns_matmul(cols, torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="weight"):
        columns_matmul(cols, torch.randn(2, 3, 3, 3), out_hw=(3, 4))
    with pytest.raises(ValueError, match="groups"):
        columns_matmul(cols, torch.randn(3, 2, 3, 3), groups=2, out_hw=(3, 4))
    with pytest.raises(ValueError, match="bias"):
        columns_matmul(cols, torch.randn(2, 4, 3, 3), torch.randn(3), out_hw=(3, 4))


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("groups,off_groups,stride,padding,dilation", [(1, 1, 1, 1, 1), (2, 2, 2, 1, (1, 2))])
def test_gradcheck(groups, off_groups, stride, padding, dilation):
    gen = torch.Generator().manual_seed(6)
    b, cin, cout, h, w, kh, kw = 1, 4, 2, 4, 5, 2, 3
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    k = kh * kw
    x = torch.randn(b, cin, h, w, generator=gen, dtype=torch.float64)
    # Integer part in [-2, 1], fractional part in [0.3, 0.7]: away from the bilinear kinks.
    offset = (
        torch.randint(-2, 2, (b, 2 * off_groups * k, ho, wo), generator=gen).double()
        + 0.3
        + 0.4 * torch.rand(b, 2 * off_groups * k, ho, wo, generator=gen, dtype=torch.float64)
    )
    mask = torch.rand(b, off_groups * k, ho, wo, generator=gen, dtype=torch.float64)
    weight = torch.randn(cout, cin // groups, kh, kw, generator=gen, dtype=torch.float64)
    bias = torch.randn(cout, generator=gen, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, offset, mask, weight, bias))

    def fn(x_, off_, m_, w_, b_):
        return deform_conv2d(x_, off_, w_, b_, stride=stride, padding=padding, dilation=dilation, mask=m_)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)
    # Every argument actually receives a (non-trivial) gradient.
    fn(*inputs).sum().backward()
    for t in inputs:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gradcheck_without_mask_or_bias():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = (0.35 + 0.3 * torch.rand(2, 18, 3, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, o, w_: deform_conv2d(a, o, w_, padding=1), (x, offset, weight), eps=1e-6, atol=1e-6
    )


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_wrong_offset_channels_raise():
    x = torch.randn(1, 4, 5, 5)
    weight = torch.randn(2, 4, 3, 3)
    for ch in (0, 17, 19, 27, 2 * 3 * 9):  # 2*3*9: G = 3 does not divide Cin = 4
        with pytest.raises(ValueError, match="offset"):
            deform_conv2d(x, torch.zeros(1, ch, 3, 3), weight)


def test_wrong_offset_spatial_size_or_batch_raise():
    x = torch.randn(2, 4, 5, 5)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(2, 18, 5, 5), weight)  # output is 3x3
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(2, 18, 5, 5), weight, stride=2, padding=1)  # output 3x3
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), weight)  # batch mismatch
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(x, torch.zeros(2, 18, 3), weight)  # not 4-D


def test_other_shape_errors():
    x = torch.randn(1, 4, 5, 5)
    off = torch.zeros(1, 18, 3, 3)
    with pytest.raises(ValueError, match="mask"):
        deform_conv2d(x, off, torch.randn(2, 4, 3, 3), mask=torch.ones(1, 18, 3, 3))
    with pytest.raises(ValueError, match="weight"):
        deform_conv2d(x, off, torch.randn(2, 3, 3, 3))  # 3 does not divide Cin = 4
    with pytest.raises(ValueError, match="groups"):
        deform_conv2d(x, off, torch.randn(3, 2, 3, 3))  # groups = 2 does not divide Cout = 3
    with pytest.raises(ValueError, match="input"):
        deform_conv2d(torch.randn(4, 5, 5), off, torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError):
        deform_conv2d(torch.randn(1, 4, 2, 2), torch.zeros(1, 18, 1, 1), torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="bias"):
        deform_conv2d(x, off, torch.randn(2, 4, 3, 3), torch.randn(3))


# --------------------------------------------------------------------------- #
# Module
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "cin,cout,k,stride,padding,dilation,groups,bias",
    [(3, 8, 3, 1, 1, 1, 1, True), (4, 6, (3, 1), 2, (1, 0), 1, 2, False), (4, 4, 3, 1, 2, 2, 4, True)],
)
def test_module_zero_offset_equals_conv2d(cin, cout, k, stride, padding, dilation, groups, bias):
    torch.manual_seed(8)
    m = DeformConv2d(cin, cout, k, stride, padding, dilation, groups, bias)
    ref = torch.nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias)
    with torch.no_grad():
        ref.weight.copy_(m.weight)
        if bias:
            ref.bias.copy_(m.bias)
    assert m.weight.shape == ref.weight.shape
    assert (m.bias is None) == (not bias)
    x = torch.randn(2, cin, 8, 9)
    want = ref(x)
    kh, kw = m.kernel_size
    offset = torch.zeros(2, 2 * kh * kw, *want.shape[-2:])
    torch.testing.assert_close(m(x, offset), want, atol=1e-5, rtol=1e-5)
    mask = torch.ones(2, kh * kw, *want.shape[-2:])
    torch.testing.assert_close(m(x, offset, mask), want, atol=1e-5, rtol=1e-5)


def test_module_init_bounds_and_grad():
    torch.manual_seed(9)
    m = DeformConv2d(8, 16, 3, padding=1, groups=2)
    fan_in = 4 * 9
    bound = 1.0 / math.sqrt(fan_in)
    assert m.weight.abs().max() <= bound and m.weight.std() > bound / 4
    assert m.bias is not None and m.bias.abs().max() <= bound
    x = torch.randn(1, 8, 5, 5)
    offset = torch.randn(1, 18, 5, 5, requires_grad=True)
    m(x, offset).square().sum().backward()
    assert m.weight.grad is not None and m.bias.grad is not None and offset.grad is not None


def test_float32_matches_float64():
    torch.manual_seed(10)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    offset = 3 * torch.randn(2, 36, 6, 6, dtype=torch.float64)
    mask = torch.rand(2, 18, 6, 6, dtype=torch.float64)
    want = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    got = deform_conv2d(x.float(), offset.float(), weight.float(), padding=1, mask=mask.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    torch.manual_seed(11)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    offset = 3 * torch.randn(2, 36, 6, 6, dtype=torch.float64)
    mask = torch.rand(2, 18, 6, 6, dtype=torch.float64)
    want = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    got = deform_conv2d(*(t.cuda() for t in (x, offset, weight, bias)), padding=1, mask=mask.cuda())
    torch.testing.assert_close(got.cpu(), want, atol=1e-10, rtol=1e-10)


def test_empty_batch():
    out = deform_conv2d(torch.randn(0, 2, 4, 4), torch.zeros(0, 18, 4, 4), torch.randn(3, 2, 3, 3), padding=1)
    assert out.shape == (0, 3, 4, 4)


# --------------------------------------------------------------------------- #
# warp
# --------------------------------------------------------------------------- #
from shortcutify.ops.deform import warp_reference as warp  # noqa: E402  (the reference; the dispatcher: test_warp_fast_path.py)


@pytest.mark.parametrize("channels_last", [False, True])
def test_warp_is_the_one_tap_deformable_sampling_in_either_memory_format(channels_last):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    flow = 1.5 * torch.randn(2, 2, 6, 7, dtype=torch.float64)
    src = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    out = warp(src, flow)
    expected = deform_columns(x, flow, 1).view(2, 5, 6, 7)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(warp(src, torch.zeros_like(flow)), x, atol=1e-12, rtol=0)  # zero flow: the identity


def test_warp_moves_content_by_whole_pixels_and_reads_zeros_outside():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4)
    flow[:, 1] = 1.0  # dx = +1: every pixel takes its right neighbour's value
    out = warp(x, flow)
    torch.testing.assert_close(out[..., :3], x[..., 1:])
    assert torch.equal(out[..., 3], torch.zeros(1, 1, 3))


def test_warp_rejects_a_flow_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"flow must have shape \[B, 2, H, W\]"):
        warp(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 4, 5))


def test_warp_computes_the_same_grid_in_eager_code_and_in_compiled_code_and_keeps_few_grids():
    """Eager calls reuse each size's pixel grid (fewer kernels); compiled code builds it inline."""
    from shortcutify.ops import deform

    gen = torch.Generator().manual_seed(0)
    compiled = torch.compile(warp, backend="aot_eager", fullgraph=True)
    for h, w in [(5, 7), (8, 3), (5, 7)]:
        x, flow = torch.randn(2, 3, h, w, generator=gen), torch.randn(2, 2, h, w, generator=gen) * 3
        torch.testing.assert_close(warp(x, flow), compiled(x, flow), rtol=0, atol=1e-6)
    kept = deform._pixel_grid.cache_info().maxsize
    for n in range(2 * kept):
        warp(torch.randn(1, 1, 2, n + 1), torch.zeros(1, 2, 2, n + 1))
    assert deform._pixel_grid.cache_info().currsize == kept
