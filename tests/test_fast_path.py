"""The GPU fast path of AdaBD: one custom op, one Triton kernel, tested against the reference.

Without a GPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, set by
``conftest.py`` before anything imports triton): same code, executed on the CPU. Without ``triton`` installed
the kernel tests are skipped with that reason; the op's registration is tested regardless.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from shortcutify.core.cost import count_macs
from shortcutify.ops import adabd_conv
from shortcutify.ops import adabd_conv_reference, fast_path_available, use_fast_path

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'shortcutify[gpu]'): the kernel is untested here")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def operands(b=2, c=8, o=8, hw=(9, 11), k=3, reach=4.0, seed=0, dtype=torch.float32, bias=True):
    """Random AdaBD operands; offsets of ``reach`` px (many samples fall outside the map)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    t = dict(
        f_ref=torch.randn(b, c, h, w, generator=gen),
        a=torch.randn(b, c, h, w, generator=gen),
        offset=torch.randn(b, 2 * k * k, h, w, generator=gen) * reach,
        mask=torch.rand(b, k * k, h, w, generator=gen),
        weight=torch.randn(o, c, k, k, generator=gen) / (c * k * k) ** 0.5,
        bias=torch.randn(o, generator=gen) if bias else None,
    )
    return {n: (v.to(DEVICE, dtype) if v is not None else None) for n, v in t.items()}


@pytest.fixture(autouse=True)
def _ieee_float32_on_cuda():
    """On a GPU the kernel's float32 products follow ``cudnn.allow_tf32`` (on by default): the
    comparisons with the reference here are made in IEEE float32."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def kernel():
    from shortcutify.ops.adabd_triton import adabd_conv_triton

    return adabd_conv_triton


# ------------------------------------------------------------------ the kernel
@needs_triton
@pytest.mark.parametrize(
    "shape",
    [
        dict(b=2, c=8, o=8, hw=(9, 11)),  # the block's case: h -> h
        dict(b=1, c=40, o=12, hw=(7, 5)),  # channels beyond one channel tile, fewer outputs
        dict(b=1, c=4, o=20, hw=(3, 3), k=5),  # a 5x5 kernel on a map smaller than it
        dict(b=1, c=8, o=8, hw=(1, 13), reach=30.0),  # one row; offsets far outside
        dict(b=1, c=6, o=6, hw=(10, 9), bias=False),
    ],
)
@pytest.mark.parametrize("reference_only", [False, True])
def test_the_kernel_equals_the_reference(shape, reference_only):
    t = operands(**shape)
    want, want_ref = adabd_conv_reference(**t, reference_only=reference_only)
    got, got_ref = kernel()(**t, reference_only=reference_only)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    if reference_only:
        torch.testing.assert_close(got_ref, want_ref, rtol=1e-4, atol=1e-4)
    else:
        assert got_ref is None


@needs_triton
def test_the_kernel_reads_any_strides():
    t = operands()
    want, _ = adabd_conv_reference(**t)
    cl = {n: (v.contiguous(memory_format=torch.channels_last) if v is not None and v.dim() == 4 else v) for n, v in t.items()}
    torch.testing.assert_close(kernel()(**cl)[0], want, rtol=1e-4, atol=1e-4)
    sliced = dict(t, f_ref=torch.cat([t["f_ref"], t["a"]], dim=1)[:, : t["a"].shape[1]])  # a channel slice
    torch.testing.assert_close(kernel()(**sliced)[0], want, rtol=1e-4, atol=1e-4)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_kernel_in_low_precision_is_as_close_as_the_reference(dtype):
    t = operands(c=16, o=16)
    exact, _ = adabd_conv_reference(**t)
    low = {n: (v.to(dtype) if v is not None else None) for n, v in t.items()}
    ref_err = (adabd_conv_reference(**low)[0].float() - exact).abs().max()
    got = kernel()(**low)[0]
    assert got.dtype == dtype
    assert (got.float() - exact).abs().max() <= 2 * ref_err + 1e-3  # float32 positions and accumulation


@needs_triton
def test_the_kernel_refuses_what_it_does_not_take():
    t = operands()
    with pytest.raises(TypeError, match="one dtype"):
        kernel()(**dict(t, a=t["a"].double()))
    with pytest.raises(ValueError, match="odd square weight"):
        kernel()(**dict(t, weight=t["weight"][..., :2, :2]))
    with pytest.raises(ValueError, match="offset must be"):
        kernel()(**dict(t, offset=t["offset"][:, :4]))


# ------------------------------------------------------------------ the op
@pytest.mark.parametrize("reference_only", [False, True])
def test_the_op_passes_torch_library_opcheck(reference_only):
    t = operands(b=1, c=4, o=4, hw=(5, 6))
    for v in t.values():
        v.requires_grad_(True)
    args = (t["f_ref"], t["a"], t["offset"], t["mask"], t["weight"], t["bias"], reference_only)
    torch.library.opcheck(torch.ops.shortcutify.adabd_conv.default, args)


def test_the_ops_gradients_are_the_references():
    t = operands(b=1, c=4, o=6, hw=(5, 6))
    leaves = {n: v.clone().requires_grad_(True) for n, v in t.items()}
    out, ref = torch.ops.shortcutify.adabd_conv(*leaves.values(), True)
    (out.square().sum() + ref.sum()).backward()
    refs = {n: v.clone().requires_grad_(True) for n, v in t.items()}
    out2, ref2 = adabd_conv_reference(*refs.values(), reference_only=True)
    (out2.square().sum() + ref2.sum()).backward()
    for n in t:
        torch.testing.assert_close(leaves[n].grad, refs[n].grad, rtol=1e-4, atol=1e-4)


def test_export_sees_one_op():
    class Fused(torch.nn.Module):
        def forward(self, f_ref, a, offset, mask, weight, bias):
            return torch.ops.shortcutify.adabd_conv(f_ref, a, offset, mask, weight, bias, False)[0]

    t = operands(b=1, c=4, o=4, hw=(5, 6))
    program = torch.export.export(Fused(), tuple(t.values()))
    calls = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.shortcutify.adabd_conv.default) == 1
    assert not any("grid_sampler" in str(c) or "matmul" in str(c) for c in calls)
    torch.testing.assert_close(program.module()(*t.values()), adabd_conv_reference(**t)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reference_only", [False, True])
def test_the_op_is_counted_as_its_reference(reference_only):
    t = operands(b=2, c=6, o=10, hw=(5, 7))
    op_macs = count_macs(lambda *v: torch.ops.shortcutify.adabd_conv(*v, reference_only), *t.values())
    ref_macs = count_macs(lambda *v: adabd_conv_reference(*v, reference_only=reference_only), *t.values())
    assert op_macs[0] == ref_macs[0] > 0
    assert "shortcutify::adabd_conv" not in op_macs[2]  # not left uncounted


def test_the_dispatcher_uses_the_reference_when_told():
    t = operands(b=1, c=4, o=4, hw=(5, 6))
    want = adabd_conv_reference(**t)[0]
    with use_fast_path(False):
        assert torch.equal(adabd_conv(**t)[0], want)
    assert fast_path_available("cuda") == (HAS_TRITON and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"))


def test_compiled_code_reads_whether_the_fast_path_applies_without_tracing_the_import():
    from shortcutify.ops import fast_path as module

    saved = dict(module._AVAILABLE), dict(module._TRITON)
    try:
        want = torch.ones(2) + (1 if fast_path_available("cuda") else -1)
        module._AVAILABLE.clear()  # as in a fresh process: the first ask happens inside compiled code
        module._TRITON.clear()
        fn = torch.compile(lambda x: x + 1 if fast_path_available("cuda") else x - 1, backend="eager", fullgraph=True)
        assert torch.equal(fn(torch.ones(2)), want)
    finally:
        for cache, kept in zip((module._AVAILABLE, module._TRITON), saved):
            cache.clear()
            cache.update(kept)


def test_a_kernel_that_fails_to_launch_falls_back_to_the_reference_once_with_a_warning():
    """A Triton that cannot build the kernel for the card must cost speed, never results."""
    from shortcutify.ops import fast_path as module

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this card")

    t = operands(b=1, c=4, o=4, hw=(5, 6), dtype=torch.float16)  # a dtype the CPU's gather path does not take
    device = t["a"].device.type
    saved = dict(module._AVAILABLE), dict(module._TRITON)
    try:
        module._AVAILABLE[device] = True
        module._TRITON["adabd"] = broken
        with pytest.warns(UserWarning, match="Triton kernel 'adabd' failed.*no kernel for this card.*plain PyTorch"):
            got = torch.ops.shortcutify.adabd_conv(*t.values(), True)
        want = adabd_conv_reference(**t, reference_only=True)
        assert torch.equal(got[0], want[0].to(got[0].dtype)) and torch.equal(got[1], want[1].to(got[1].dtype))
        assert not fast_path_available(device)  # said once: later calls go straight to the reference
    finally:
        for cache, kept in zip((module._AVAILABLE, module._TRITON), saved):
            cache.clear()
            cache.update(kept)


@needs_triton
def test_the_kernel_takes_other_tiles_and_refuses_bad_ones():
    t = operands(b=1, c=40, o=12, hw=(7, 5))
    want = adabd_conv_reference(**t)[0]
    got = kernel()(**t, tiles=(16, 16, 16, 2))[0]
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="powers of two"):
        kernel()(**t, tiles=(48, 16, 16, 4))


@needs_triton
def test_the_default_tiling_fills_the_gpu_with_the_largest_pixel_tile_that_can():
    from shortcutify.ops.adabd_triton import default_tiles

    sms = 132
    big = default_tiles(1, 64, 64, 512 * 1024, sms)
    assert big == (128, 32, 64, 4)
    assert default_tiles(1, 64, 64, 512 * 1024, sms, element_bytes=4) == (128, 16, 64, 4)  # float32: a narrower channel step
    small = default_tiles(1, 64, 64, 64 * 64, sms)  # 4096 pixels: 128-pixel tiles would leave most of the GPU idle
    assert small[0] == 32
    assert default_tiles(8, 64, 64, 64 * 64, sms)[0] == 128  # the batch fills it
    for b, c, o, p in [(1, 3, 5, 7), (2, 200, 300, 10**5), (1, 16, 16, 1)]:
        tiles = default_tiles(b, c, o, p, sms)
        assert all(t & (t - 1) == 0 for t in tiles) and min(tiles[:3]) >= 16
        n_programs = -(-p // tiles[0]) * b * -(-o // tiles[2])
        assert tiles[0] == 32 or 2 * n_programs >= sms


@needs_triton
def test_float32_as_bfloat16_pairs_is_more_accurate_than_tf32_allows():
    """``bf16x3`` (the default for float32 when TF32 is allowed) must stay well inside TF32's
    error (2^-11 relative per product) and far from bfloat16's own (2^-8)."""
    t = operands(b=1, c=24, o=16, hw=(9, 11), seed=3)
    exact = adabd_conv_reference(**{n: (v.double() if v is not None else None) for n, v in t.items()}, reference_only=True)
    scale = exact[0].abs().max()
    got = kernel()(**t, reference_only=True, fp32_products="bf16x3")
    low = adabd_conv_reference(**{n: (v.bfloat16() if v is not None else None) for n, v in t.items()}, reference_only=True)
    for g, lo, want in zip(got, low, exact):
        assert g.dtype == torch.float32
        err = (g.double() - want).abs().max()
        assert err <= 2.0**-11 * scale / 4
        assert err * 20 < (lo.double() - want).abs().max()
    with pytest.raises(ValueError, match="fp32_products"):
        kernel()(**t, fp32_products="fp8")


def test_the_switch_sets_from_a_call_on_or_within_a_with_block_only():
    """As ``torch.set_grad_enabled``: a bare call switches from then on (before 0.22 it did nothing), a ``with``
    block switches within it and gives the setting before back, also on an error."""
    from shortcutify.ops.fast_path import fast_path_enabled

    assert fast_path_enabled()
    try:
        use_fast_path(False)
        assert not fast_path_enabled()
        with use_fast_path(True):
            assert fast_path_enabled()
        assert not fast_path_enabled()
    finally:
        use_fast_path(True)
    with pytest.raises(KeyError):
        with use_fast_path(False):
            assert not fast_path_enabled()
            raise KeyError
    assert fast_path_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks about a machine without CUDA")
def test_no_fast_path_is_said_to_apply_for_cuda_where_torch_has_no_cuda_device():
    code = "from shortcutify.ops import fast_path_available; print(fast_path_available('cuda'), fast_path_available('cpu'))"
    env = {**os.environ, "TRITON_INTERPRET": "0"}  # (the tests run Triton's interpreter: a user's process does not)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]
