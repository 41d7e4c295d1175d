"""The CPU fast paths of AdaBD and the warp (``shortcutify.ops.gather``): the references' numbers by row gathers.

``adabd_conv_gather`` must equal ``adabd_conv_reference`` (exactly up to rounding: checked in
float64) for any shape, kernel size and offset, including samples far outside the map and
positions that are not finite; ``adabd_conv`` must take it only for CPU inference in float32
or float64 where it pays (wide and large maps), through the custom op (so that ``cost()``
counts it as the reference). ``warp_gather`` must equal ``warp_reference`` the same way and
return channels-last memory; ``warp`` must take it only for CPU inference on channels-last
float32 or float64 input where it pays, through the ``shortcutify::warp`` custom op.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import shortcutify.ops.adabd as adabd_module
from shortcutify.core.cost import count_macs
from shortcutify.ops import adabd_conv, adabd_conv_reference, use_fast_path, warp, warp_reference
import shortcutify.ops.gather as gather_module
import shortcutify.ops.warping as warping_module
from shortcutify.ops.gather import MIN_CHANNELS, MIN_PIXELS, MIN_WARP_ELEMENTS, ROWS_MIN_CHANNELS, ROWS_MIN_VALUES, adabd_conv_gather, gather_pays, rows_per_chunk, warp_gather


def operands(b=2, c=5, o=6, hw=(7, 9), k=3, reach=3.0, seed=0, dtype=torch.float64, bias=True):
    """Random AdaBD operands on CPU; offsets of ``reach`` px (many samples fall outside the map)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    t = dict(
        f_ref=torch.randn(b, c, h, w, generator=gen, dtype=dtype),
        a=torch.randn(b, c, h, w, generator=gen, dtype=dtype),
        offset=torch.randn(b, 2 * k * k, h, w, generator=gen, dtype=dtype) * reach,
        mask=torch.rand(b, k * k, h, w, generator=gen, dtype=dtype),
        weight=torch.randn(o, c, k, k, generator=gen, dtype=dtype) / (c * k * k) ** 0.5,
        bias=torch.randn(o, generator=gen, dtype=dtype) if bias else None,
    )
    return t


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 9),
    o=st.integers(1, 7),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.sampled_from([1, 3, 5]),
    reach=st.sampled_from([0.0, 0.5, 3.0, 40.0]),
    bias=st.booleans(),
    reference_only=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_gather_equals_the_reference(b, c, o, h, w, k, reach, bias, reference_only, channels_last, seed):
    t = operands(b=b, c=c, o=o, hw=(h, w), k=k, reach=reach, seed=seed, bias=bias)
    if channels_last:  # then the product writes channel rows: the results come back channels-last
        t["a"] = t["a"].contiguous(memory_format=torch.channels_last)
    want = adabd_conv_reference(**t, reference_only=reference_only)
    got = adabd_conv_gather(**t, reference_only=reference_only)
    torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-12)
    assert got[0].dtype == torch.float64
    rows = t["a"].is_contiguous(memory_format=torch.channels_last) and not t["a"].is_contiguous()  # (one channel or pixel: both)
    assert got[0].is_contiguous(memory_format=torch.channels_last if rows else torch.contiguous_format)
    if reference_only:
        torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-12)
        assert got[1].stride() == got[0].stride()
    else:
        assert got[1] is None



@pytest.mark.parametrize("rows", [1, 2, 3, 11])
@pytest.mark.parametrize("reference_only", [False, True])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_output_rows_computed_in_chunks_give_the_same_result(monkeypatch, rows, reference_only, memory_format):
    """One row at a time, two, three (11 rows: a short last chunk), all at once: the same numbers."""
    per_row = 2 * 9 * 9 * 5 * 8  # B=2, W=9, k²=9, 5 channels, float64
    monkeypatch.setattr(gather_module, "CHUNK_BYTES", rows * per_row + per_row // 2)
    assert rows_per_chunk(2, 9, 9, 5, 8) == rows
    t = operands(b=2, c=5, o=4, hw=(11, 9), k=3, reach=6.0, seed=3)
    t["a"] = t["a"].contiguous(memory_format=memory_format)
    want = adabd_conv_reference(**t, reference_only=reference_only)
    got = adabd_conv_gather(**t, reference_only=reference_only)
    torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-12)
    assert got[0].is_contiguous(memory_format=memory_format)
    if reference_only:
        torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-12)


def test_rows_per_chunk_keeps_the_columns_within_the_budget():
    per_row = 2 * 64 * 9 * 32 * 4  # B=2, W=64, k²=9, 32 channels, float32
    assert rows_per_chunk(2, 64, 9, 32, 4, budget=10 * per_row) == 10
    assert rows_per_chunk(2, 64, 9, 32, 4, budget=10 * per_row + per_row - 1) == 10
    assert rows_per_chunk(2, 64, 9, 32, 4, budget=per_row - 1) == 1  # at least one row, whatever the budget
    assert rows_per_chunk(1, 64, 9, 32, 4) * per_row // 2 <= gather_module.CHUNK_BYTES

def test_the_gather_in_float32_is_as_close_to_float64_as_the_reference():
    t64 = operands(b=2, c=16, o=16, hw=(12, 13), reach=5.0)
    t32 = {n: v.float() if v is not None else None for n, v in t64.items()}
    exact = adabd_conv_reference(**t64)[0]
    ref_err = (adabd_conv_reference(**t32)[0].double() - exact).abs().max()
    gather_err = (adabd_conv_gather(**t32)[0].double() - exact).abs().max()
    assert gather_err <= 2 * ref_err + 1e-6


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
def test_positions_far_outside_read_zeros_and_positions_not_finite_give_nan_as_in_the_reference(bad):
    t = operands(b=1, c=3, o=2, hw=(5, 6))
    t["offset"][0, 4, 2, 3] = bad  # dy of tap 2 at pixel (2, 3)
    t["offset"][0, 1, 0, 0] = bad  # dx of tap 0 at pixel (0, 0)
    want, got = adabd_conv_reference(**t)[0], adabd_conv_gather(**t)[0]
    assert torch.equal(want.isnan(), got.isnan())
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-9, atol=1e-12)


def test_the_gather_reads_any_strides_and_memory_format():
    t = operands(b=2, c=6, o=4, hw=(8, 7), dtype=torch.float32)
    want = adabd_conv_reference(**t)[0]
    strided = dict(t)
    strided["f_ref"] = t["f_ref"].contiguous(memory_format=torch.channels_last)
    strided["a"] = torch.stack([t["a"], t["a"]], dim=2).flatten(1, 2)[:, ::2]  # a channel-strided view
    strided["offset"] = t["offset"].transpose(2, 3).contiguous().transpose(2, 3)  # rows and columns swapped in memory
    torch.testing.assert_close(adabd_conv_gather(**strided)[0], want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ when adabd_conv takes it
@pytest.fixture
def gathers(monkeypatch):
    """Counts the calls that reach the gather implementation."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return adabd_conv_gather(*args, **kwargs)

    monkeypatch.setattr(adabd_module, "adabd_conv_gather", counted)
    return calls


def big(dtype=torch.float32):
    """Operands wide and large enough for the gather to pay (see ``gather_pays``)."""
    return operands(b=1, c=MIN_CHANNELS, o=8, hw=(32, MIN_PIXELS // 32), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_inference_takes_the_gather_through_the_custom_op(gathers, dtype):
    t = big(dtype)
    with torch.no_grad():
        out, ref_out = adabd_conv(**t, reference_only=True)
    assert len(gathers) == 1
    want = adabd_conv_reference(**t, reference_only=True)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out, want[0], **tol)
    torch.testing.assert_close(ref_out, want[1], **tol)
    assert out.is_contiguous()


def test_channels_last_input_gives_channels_last_output_through_the_op_which_opcheck_accepts(gathers):
    t = big()
    t["a"] = t["a"].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out, ref_out = adabd_conv(**t, reference_only=True)
    assert len(gathers) == 1
    assert out.is_contiguous(memory_format=torch.channels_last) and ref_out.is_contiguous(memory_format=torch.channels_last)
    want = adabd_conv_reference(**t, reference_only=True)
    torch.testing.assert_close(out, want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref_out, want[1], rtol=1e-5, atol=1e-5)
    for reference_only in (False, True):  # the fake says what the real op returns, strides included
        torch.library.opcheck(torch.ops.shortcutify.adabd_conv.default, (*t.values(), reference_only))


def test_channels_last_features_take_the_gather_from_their_own_thresholds(gathers):
    """Channels-last features (the full block's since 0.19) pay from ROWS_MIN_CHANNELS channels and
    ROWS_MIN_VALUES values per sample; the same features in contiguous memory keep MIN_CHANNELS, MIN_PIXELS."""
    t = operands(b=1, c=ROWS_MIN_CHANNELS, o=4, hw=(16, ROWS_MIN_VALUES // (16 * ROWS_MIN_CHANNELS)), dtype=torch.float32)
    rows = {**t, "a": t["a"].contiguous(memory_format=torch.channels_last)}
    assert gather_pays(rows["a"]) and gather_pays(t["a"], rows=True)
    assert not gather_pays(t["a"]) and not gather_pays(rows["a"], rows=False)  # fewer than MIN_CHANNELS
    with torch.no_grad():
        torch.testing.assert_close(adabd_conv(**rows)[0], adabd_conv_reference(**t)[0], rtol=1e-5, atol=1e-5)
        assert len(gathers) == 1
        adabd_conv(**t)  # contiguous: the reference
        assert len(gathers) == 1
    narrow = operands(b=1, c=ROWS_MIN_CHANNELS - 1, hw=(64, 64), dtype=torch.float32)["a"].contiguous(memory_format=torch.channels_last)
    small = t["a"][..., :-1].contiguous(memory_format=torch.channels_last)  # one column short of ROWS_MIN_VALUES
    assert not gather_pays(narrow) and not gather_pays(small)


def test_calls_that_record_gradients_run_the_reference_and_get_its_gradients(gathers):
    t = big(torch.float64)
    t["offset"].requires_grad_(True)
    out, _ = adabd_conv(**t)
    out.square().sum().backward()
    assert not gathers
    leaf = t["offset"].detach().requires_grad_(True)
    adabd_conv_reference(**{**t, "offset": leaf})[0].square().sum().backward()
    assert torch.equal(t["offset"].grad, leaf.grad)


def test_the_switch_low_precision_autocast_and_small_maps_run_the_reference(gathers):
    t = big()
    with torch.no_grad():
        with use_fast_path(False):
            assert torch.equal(adabd_conv(**t)[0], adabd_conv_reference(**t)[0])
        half = {n: v.to(torch.bfloat16) if v is not None else None for n, v in t.items()}
        assert torch.equal(adabd_conv(**half)[0], adabd_conv_reference(**half)[0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(adabd_conv(**t)[0], adabd_conv_reference(**t)[0])
        for small in (operands(c=MIN_CHANNELS - 1, hw=(32, 32)), operands(c=MIN_CHANNELS, hw=(31, 32))):
            small = {n: v.float() if v is not None else None for n, v in small.items()}
            assert torch.equal(adabd_conv(**small)[0], adabd_conv_reference(**small)[0])
    assert not gathers


def test_the_cpu_path_is_counted_as_the_reference():
    t = big()
    fast = count_macs(lambda *v: adabd_conv(*v)[0], *t.values())
    with use_fast_path(False):
        plain = count_macs(lambda *v: adabd_conv(*v)[0], *t.values())
    assert fast[0] == plain[0] > 0
    assert fast[1] == {"adabd_conv": fast[0]} and not fast[2]  # the op, counted whole, nothing left out


def test_torch_compile_keeps_the_reference_which_it_can_fuse(gathers):
    t = big()
    compiled = torch.compile(lambda *v: adabd_conv(*v)[0], backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*t.values()), adabd_conv_reference(**t)[0])
    assert not gathers


# ------------------------------------------------------------------ the warp by row gathers
def warp_operands(b=2, c=5, hw=(7, 9), reach=3.0, seed=0, dtype=torch.float64, channels_last=True):
    """A map (channels-last by default) and a flow of ``reach`` px (many samples fall outside)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, *hw, generator=gen, dtype=dtype)
    flow = torch.randn(b, 2, *hw, generator=gen, dtype=dtype) * reach
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), flow


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 9), w=st.integers(1, 9),
    reach=st.sampled_from([0.0, 0.5, 3.0, 40.0]), channels_last=st.booleans(), seed=st.integers(0, 2**16),
)
def test_the_warp_gather_equals_the_reference_in_channels_last_memory(b, c, h, w, reach, channels_last, seed):
    x, flow = warp_operands(b, c, (h, w), reach, seed, channels_last=channels_last)
    got = warp_gather(x, flow)
    torch.testing.assert_close(got, warp_reference(x, flow), rtol=1e-9, atol=1e-12)
    assert got.dtype == torch.float64 and got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
def test_the_warp_gather_reads_zeros_far_outside_and_gives_nan_where_the_reference_does(bad):
    x, flow = warp_operands(b=1, c=3, hw=(5, 6))
    flow[0, 0, 2, 3] = bad
    flow[0, 1, 0, 0] = bad
    want, got = warp_reference(x, flow), warp_gather(x, flow)
    assert torch.equal(want.isnan(), got.isnan())
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-9, atol=1e-12)


@pytest.fixture
def warp_gathers(monkeypatch):
    """Counts the calls that reach the warp's gather implementation."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return warp_gather(*args, **kwargs)

    monkeypatch.setattr(warping_module, "warp_gather", counted)
    return calls


def big_warp(dtype=torch.float32, channels_last=True):
    """A warp wide and large enough for the gather to pay (see ``warp_gather_pays``): just."""
    return warp_operands(b=1, c=MIN_CHANNELS, hw=(32, MIN_WARP_ELEMENTS // (32 * MIN_CHANNELS)), dtype=dtype, channels_last=channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_inference_on_channels_last_input_takes_the_warp_gather(warp_gathers, dtype):
    x, flow = big_warp(dtype)
    r = torch.randn(x.shape, dtype=dtype)
    # float32: positions in pixels here, through grid_sample's normalised coordinates there
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        out = warp(x, flow)
        summed = warp(x, flow, r)
    assert len(warp_gathers) == 2
    torch.testing.assert_close(out, warp_reference(x, flow), **tol)
    assert out.is_contiguous(memory_format=torch.channels_last)  # the input's format
    torch.testing.assert_close(summed, r + warp_reference(x, flow), **tol)
    assert summed.is_contiguous()  # the residual's format


def test_the_switch_gradients_autocast_low_precision_other_formats_and_small_maps_warp_by_the_reference(warp_gathers):
    x, flow = big_warp()
    with torch.no_grad():
        with use_fast_path(False):
            assert torch.equal(warp(x, flow), warp_reference(x, flow))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            warp(x, flow)
        assert torch.equal(warp(x.bfloat16(), flow), warp_reference(x.bfloat16(), flow))
        plain = x.contiguous()
        assert torch.equal(warp(plain, flow), warp_reference(plain, flow))
        width = MIN_WARP_ELEMENTS // (32 * MIN_CHANNELS)
        narrow = warp_operands(b=1, c=MIN_CHANNELS - 1, hw=(64, width), dtype=torch.float32)  # enough values, too few channels
        short = warp_operands(b=1, c=MIN_CHANNELS, hw=(31, width), dtype=torch.float32)  # one row too few
        for small in (narrow, short):
            assert torch.equal(warp(*small), warp_reference(*small))
    leaf = x.clone().requires_grad_(True)
    warp(leaf, flow).sum().backward()
    assert leaf.grad is not None
    assert not warp_gathers


def test_the_cpu_warp_gather_is_counted_as_the_reference_and_passes_opcheck():
    x, flow = big_warp()
    fast = count_macs(warp, x, flow)
    with use_fast_path(False):
        plain = count_macs(warp, x, flow)
    assert fast[0] == plain[0] == 4 * x.numel()
    assert fast[1] == {"warp": fast[0]} and not fast[2]  # the op, counted whole, nothing left out
    small_x, small_flow = warp_operands(b=1, c=MIN_CHANNELS, hw=(8, MIN_WARP_ELEMENTS // (8 * MIN_CHANNELS)), reach=2.0, dtype=torch.float32)
    torch.library.opcheck(torch.ops.shortcutify.warp.default, (small_x, small_flow, None))  # fake and real agree on strides
