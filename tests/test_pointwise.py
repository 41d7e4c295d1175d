"""The full block's reconstruction on CPU (``shortcutify.ops.pointwise``): a 1×1 conv plus a residual, contiguous.

``pointwise_conv_add`` must equal ``conv2d(x, w, b) + residual`` in every memory format, return
contiguous memory, take its chunked CPU path only where it applies (channel rows, CPU inference,
float32/float64, fast paths on), be counted as the conv, and refuse shapes that do not fit. The full
block, which runs its inside in channels-last memory for CPU inference, must give its training path's
numbers with every CPU fast path taken.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import shortcutify.ops.pointwise as pointwise_module
from shortcutify import make_block
from shortcutify.core.blocks import channels_last_inside
from shortcutify.core.blocks.base import rows_inside
from shortcutify.core.cost import count_macs
from shortcutify.ops import use_fast_path
from shortcutify.ops.gather import ROWS_MIN_CHANNELS, ROWS_MIN_VALUES
from shortcutify.ops.pointwise import MIN_PIXELS, channel_rows, pointwise_conv_add, pointwise_rows_apply

CL = torch.channels_last


def operands(b=2, cin=5, cout=7, hw=(6, 9), bias=True, x_rows=True, residual="slice", seed=0, dtype=torch.float64):
    """``x`` (channels-last if ``x_rows``), a 1×1 weight, a bias and a residual: ``"slice"`` (channels
    of a wider channels-last map, as the block's warped decoder tap is), ``"rows"`` or ``"plain"``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cin, *hw, generator=g, dtype=dtype)
    w = torch.randn(cout, cin, 1, 1, generator=g, dtype=dtype)
    bias_t = torch.randn(cout, generator=g, dtype=dtype) if bias else None
    if residual == "slice":
        r = torch.randn(b, cout + 3, *hw, generator=g, dtype=dtype).contiguous(memory_format=CL)[:, 3:]
    else:
        r = torch.randn(b, cout, *hw, generator=g, dtype=dtype)
        r = r.contiguous(memory_format=CL) if residual == "rows" else r
    return (x.contiguous(memory_format=CL) if x_rows else x), w, bias_t, r


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3), cin=st.integers(1, 9), cout=st.integers(1, 9), h=st.integers(1, 40), w=st.integers(1, 40),
    bias=st.booleans(), x_rows=st.booleans(), residual=st.sampled_from(["slice", "rows", "plain"]), seed=st.integers(0, 2**16),
)
def test_the_sum_equals_the_conv_plus_the_residual_and_is_contiguous(b, cin, cout, h, w, bias, x_rows, residual, seed):
    x, wt, bt, r = operands(b, cin, cout, (h, w), bias, x_rows, residual, seed)
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(pointwise_module, "MIN_PIXELS", 1)  # the chunked path wherever the operands allow it
        got = pointwise_conv_add(x, wt, bt, r)
    torch.testing.assert_close(got, F.conv2d(x, wt, bt) + r, rtol=1e-12, atol=1e-12)
    assert got.is_contiguous() and got.dtype == torch.float64


def test_maps_larger_than_a_chunk_are_summed_chunk_by_chunk(monkeypatch, every_map, chunked):
    monkeypatch.setattr(pointwise_module, "PIXELS_PER_CHUNK", 7)  # chunks that end inside rows, and a short last one
    x, wt, bt, r = operands(hw=(5, 9))
    with torch.no_grad():
        got = pointwise_conv_add(x, wt, bt, r)
    torch.testing.assert_close(got, F.conv2d(x, wt, bt) + r, rtol=1e-12, atol=1e-12)
    assert chunked == [1]


def test_channel_rows_are_channels_last_maps_and_their_channel_slices():
    x = torch.randn(2, 6, 4, 5)
    assert channel_rows(x.contiguous(memory_format=CL)) and channel_rows(x.contiguous(memory_format=CL)[:, 2:5])
    assert not channel_rows(x) and not channel_rows(x.contiguous(memory_format=CL)[..., 1:])  # a column slice: rows apart
    assert channel_rows(torch.randn(2, 1, 4, 5))  # one channel: any map is its own rows


@pytest.fixture
def chunked(monkeypatch):
    """Counts the calls that reach the chunked CPU path."""
    calls = []
    real = pointwise_module._pointwise_op

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(torch.ops.shortcutify, "pointwise_conv_add", counted, raising=False)
    return calls


def test_cpu_inference_on_channel_rows_of_large_maps_takes_the_chunked_path(chunked):
    x, wt, bt, r = operands(hw=(128, MIN_PIXELS // 128), dtype=torch.float32)
    with torch.no_grad():
        got = pointwise_conv_add(x, wt, bt, r)
        small = operands(hw=(127, MIN_PIXELS // 128), dtype=torch.float32)  # one row too few: the plain sum
        torch.testing.assert_close(pointwise_conv_add(*small), F.conv2d(*small[:3]) + small[3])
    assert chunked == [1]
    torch.testing.assert_close(got, F.conv2d(x, wt, bt) + r)


@pytest.fixture
def every_map(monkeypatch):
    """The chunked path on maps of any size (the tests' maps are small)."""
    monkeypatch.setattr(pointwise_module, "MIN_PIXELS", 1)


def test_gradients_the_switch_autocast_other_dtypes_and_plain_maps_take_the_reference(chunked, every_map):
    x, wt, bt, r = operands(dtype=torch.float32)
    with torch.no_grad():
        with use_fast_path(False):
            pointwise_conv_add(x, wt, bt, r)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pointwise_conv_add(x, wt, bt, r)
        half = pointwise_conv_add(x.bfloat16(), wt.bfloat16(), bt.bfloat16(), r.bfloat16())
        assert half.dtype == torch.bfloat16 and half.is_contiguous()
        pointwise_conv_add(x.contiguous(), wt, bt, r)  # x not in channel rows
        pointwise_conv_add(x, wt, bt, r.contiguous())  # the residual not in channel rows
    leaf = x.clone().requires_grad_(True)
    out = pointwise_conv_add(leaf, wt, bt, r)
    out.sum().backward()
    assert out.is_contiguous() and leaf.grad is not None
    assert not chunked
    assert not pointwise_rows_apply(leaf, wt, bt, r)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(wt=torch.randn(7, 5, 3, 3)), "1x1"),
        (dict(x=torch.randn(2, 4, 6, 9)), "Cin=5"),
        (dict(r=torch.randn(2, 7, 6, 8)), "residual"),
    ],
)
def test_shapes_that_do_not_fit_are_refused_with_what_was_expected(kwargs, message):
    x, wt, bt, r = operands()
    args = {"x": x, "wt": wt, "r": r, **kwargs}
    with pytest.raises(ValueError, match=message):
        pointwise_conv_add(args["x"], args["wt"].double(), bt, args["r"].double())


def test_the_op_is_counted_as_the_conv_and_passes_opcheck(every_map):
    x, wt, bt, r = operands(dtype=torch.float32)
    fast = count_macs(pointwise_conv_add, x, wt, bt, r)
    with use_fast_path(False):
        plain = count_macs(pointwise_conv_add, x, wt, bt, r)
    assert fast[0] == plain[0] == 2 * 6 * 9 * 5 * 7
    assert fast[1] == {"pointwise_conv_add": fast[0]} and not fast[2]  # the op, counted whole, nothing left out
    torch.library.opcheck(torch.ops.shortcutify.pointwise_conv_add.default, (x, wt, bt, r))
    torch.library.opcheck(torch.ops.shortcutify.pointwise_conv_add.default, (x, wt, None, r))
    plain = (x.contiguous(), wt, bt, r.contiguous())  # the op called directly on operands not in channel rows: still the sum
    torch.testing.assert_close(torch.ops.shortcutify.pointwise_conv_add(*plain), F.conv2d(*plain[:3]) + plain[3])
    torch.library.opcheck(torch.ops.shortcutify.pointwise_conv_add.default, plain)


@pytest.mark.parametrize(
    "motion_prior, hw, taps_format",
    [(False, (64, 64), torch.contiguous_format), ("local", (64, 64), torch.contiguous_format),
     ("local-reduced", (64, 64), torch.contiguous_format), ("local", (65, 70), torch.channels_last)],
)
def test_the_full_block_inside_in_channels_last_gives_its_training_paths_numbers(motion_prior, hw, taps_format, monkeypatch, every_map):
    """Width 32 on 64×64 maps (and odd ones, with taps from a generator that runs channels-last): AdaBD,
    the warp and the reconstruction all take their CPU paths."""
    import shortcutify.ops.adabd as adabd_module
    import shortcutify.ops.warping as warping_module

    taken = []
    for module, name in ((adabd_module, "adabd_conv_gather"), (warping_module, "warp_gather"), (torch.ops.shortcutify, "pointwise_conv_add")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (taken.append(_name), _real(*a, **k))[1], raising=False)
    torch.manual_seed(5)
    block = make_block("full", 40, 48, width=32, motion_prior=motion_prior).double().eval()  # (every sample has the prior)
    for p in block.parameters():  # non-zero heads and reconstruction: the untrained block would hide every error
        torch.nn.init.normal_(p, std=0.05)
    a_ref, f_ref = torch.randn(2, 40, *hw, dtype=torch.float64), torch.randn(2, 48, *hw, dtype=torch.float64)
    a = torch.roll(a_ref, shifts=(3, -2), dims=(2, 3)) + 0.1 * torch.randn_like(a_ref)  # moved: the prior has work
    a_ref, f_ref, a = (t.contiguous(memory_format=taps_format) for t in (a_ref, f_ref, a))
    with torch.no_grad():
        assert rows_inside(a)
        fast, fast_aligned = block(a, block.prepare_reference(a_ref, f_ref), return_aligned=True)
    assert sorted(set(taken)) == ["adabd_conv_gather", "pointwise_conv_add", "warp_gather"]
    slow, slow_aligned = block(a, block.prepare_reference(a_ref, f_ref), return_aligned=True)
    assert not rows_inside(a)  # gradients recorded: the plain layout
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast_aligned, slow_aligned.detach(), rtol=1e-10, atol=1e-10)
    assert fast.is_contiguous() and fast_aligned.is_contiguous()  # the tail's layout


def test_the_inside_goes_channels_last_only_where_adabds_gather_pays():
    """On the plain-PyTorch AdaBD (narrow blocks, small maps) channels-last memory makes its blend slower."""
    with torch.no_grad():
        assert rows_inside(torch.zeros(1, 32, 64, 64)) and rows_inside(torch.zeros(1, 16, 64, 32))  # (the rows thresholds)
        assert rows_inside(torch.zeros(1, ROWS_MIN_CHANNELS, 1, ROWS_MIN_VALUES // ROWS_MIN_CHANNELS))
        assert not rows_inside(torch.zeros(1, ROWS_MIN_CHANNELS - 1, 64, 64))  # too narrow
        assert not rows_inside(torch.zeros(1, ROWS_MIN_CHANNELS, 1, ROWS_MIN_VALUES // ROWS_MIN_CHANNELS - 1))  # too small
        with use_fast_path(False):
            assert not rows_inside(torch.zeros(1, 32, 64, 64))
        with channels_last_inside(False):
            assert not rows_inside(torch.zeros(1, 32, 64, 64))
        assert rows_inside(torch.zeros(1, 32, 64, 64))  # the switch restored
    assert not rows_inside(torch.zeros(1, 32, 64, 64))  # gradients recorded
