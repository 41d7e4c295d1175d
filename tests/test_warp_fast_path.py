"""``shortcutify.ops.warp``: the plain-PyTorch reference everywhere, one Triton kernel (with the
residual added in the same pass) on CUDA, tested against the reference.

Without a GPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, set by
``conftest.py``); without ``triton`` installed the kernel tests are skipped with that reason.
"""

import importlib.util

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from shortcutify.core.cost import count_macs
from shortcutify.ops import use_fast_path, warp, warp_reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'shortcutify[gpu]'): the kernel is untested here")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def operands(b=2, c=5, hw=(9, 11), reach=4.0, seed=0, dtype=torch.float32):
    """A map, a flow of ``reach`` px (many samples fall outside) and a residual."""
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    x, r = torch.randn(b, c, h, w, generator=gen), torch.randn(b, c, h, w, generator=gen)
    flow = torch.randn(b, 2, h, w, generator=gen) * reach
    return x.to(DEVICE, dtype), flow.to(DEVICE), r.to(DEVICE, dtype)


def kernel():
    from shortcutify.ops.warp_triton import warp_triton

    return warp_triton


# ------------------------------------------------------------------ the kernel
@needs_triton
@given(
    b=st.integers(1, 2), c=st.integers(1, 40), h=st.integers(1, 12), w=st.integers(1, 12),
    reach=st.sampled_from([0.0, 0.7, 3.0, 30.0]), residual=st.booleans(), seed=st.integers(0, 99),
)
def test_the_kernel_equals_the_reference(b, c, h, w, reach, residual, seed):
    x, flow, r = operands(b, c, (h, w), reach, seed)
    want = warp_reference(x, flow) + (r if residual else 0)
    got = kernel()(x, flow, r if residual else None)
    assert got.shape == want.shape and got.is_contiguous() and got.dtype == x.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_triton
def test_the_kernel_reads_any_strides_and_small_tiles():
    x, flow, r = operands(c=40)
    want = warp_reference(x, flow) + r
    cl = [t.contiguous(memory_format=torch.channels_last) for t in (x, flow, r)]
    torch.testing.assert_close(kernel()(*cl), want, rtol=1e-5, atol=1e-5)
    sliced = torch.cat([x, r], dim=1)[:, :40]  # a channel slice of a wider map
    torch.testing.assert_close(kernel()(sliced, flow, r), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kernel()(x, flow, r, tiles=(16, 8, 2)), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="powers of two"):
        kernel()(x, flow, r, tiles=(48, 8, 4))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_kernel_in_low_precision_is_as_close_as_the_reference(dtype):
    x, flow, r = operands(c=16, reach=2.0)
    exact = warp_reference(x, flow) + r
    ref_err = ((warp_reference(x.to(dtype), flow) + r.to(dtype)).float() - exact).abs().max()
    got = kernel()(x.to(dtype), flow, r.to(dtype))
    assert got.dtype == dtype
    assert (got.float() - exact).abs().max() <= 2 * ref_err + 1e-3  # float32 positions, one rounding


@needs_triton
def test_a_residual_of_another_dtype_promotes_as_an_addition_would():
    """Under autocast a tap after a norm is float32 while the block's correction is bfloat16."""
    x, flow, r = operands(c=6)
    got = kernel()(x.bfloat16(), flow, r)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, warp_reference(x.bfloat16().float(), flow) + r, rtol=1e-5, atol=1e-5)
    assert kernel()(x, flow, r.bfloat16()).dtype == torch.float32
    assert torch.ops.shortcutify.warp(x.bfloat16(), flow, r).dtype == (x.bfloat16() + r).dtype


@needs_triton
def test_the_kernel_refuses_what_it_does_not_take():
    x, flow, r = operands()
    with pytest.raises(TypeError, match="dtypes among"):
        kernel()(x.double(), flow)
    with pytest.raises(TypeError, match="dtypes among"):
        kernel()(x, flow, r.double())
    with pytest.raises(ValueError, match="flow must be"):
        kernel()(x, flow[:, :, :4])


@needs_triton
def test_the_default_warp_tiling_fills_the_gpu():
    from shortcutify.ops.warp_triton import default_warp_tiles

    assert default_warp_tiles(1, 128, 512 * 1024, 132) == (512, 4, 4)
    assert default_warp_tiles(1, 128, 64 * 64, 132)[0] == 256  # 512-pixel tiles: fewer than 2 programs per SM
    assert default_warp_tiles(1, 4, 32 * 32, 132)[0] == 32  # as many as a small map allows
    for b, c, p in [(1, 1, 1), (3, 7, 50), (2, 300, 10**5)]:
        bp, bc, warps = default_warp_tiles(b, c, p, 132)
        assert all(t & (t - 1) == 0 for t in (bp, bc, warps)) and bc <= 4 and bc >= min(c, 4)
        assert bp == 32 or -(-p // bp) * b * -(-c // bc) >= 2 * 132


# ------------------------------------------------------------------ the op and the dispatcher
def test_the_op_passes_torch_library_opcheck():
    x, flow, r = operands(b=1, c=3, hw=(5, 6))
    torch.library.opcheck(torch.ops.shortcutify.warp.default, (x, flow, r))
    torch.library.opcheck(torch.ops.shortcutify.warp.default, (x, flow, None))


def test_the_op_computes_the_reference_wherever_it_runs():
    x, flow, r = operands()
    torch.testing.assert_close(torch.ops.shortcutify.warp(x, flow, r), warp_reference(x, flow) + r, rtol=1e-5, atol=1e-5)


def test_export_sees_one_op_and_the_cost_counts_it_as_grid_sample():
    class Warp(torch.nn.Module):
        def forward(self, x, flow, r):
            return torch.ops.shortcutify.warp(x, flow, r)

    x, flow, r = operands(b=1, c=3, hw=(5, 6))
    program = torch.export.export(Warp(), (x, flow, r))
    calls = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert calls == [torch.ops.shortcutify.warp.default]
    torch.testing.assert_close(program.module()(x, flow, r), warp_reference(x, flow) + r, rtol=1e-5, atol=1e-5)
    op_macs = count_macs(lambda *v: torch.ops.shortcutify.warp(*v), x, flow, r)
    ref_macs = count_macs(warp_reference, x, flow)
    assert op_macs[0] == ref_macs[0] == 4 * x.numel()


def test_the_dispatcher_runs_the_reference_off_cuda_and_when_told():
    x, flow, r = operands()
    want = warp_reference(x, flow)
    if DEVICE == "cpu":
        assert torch.equal(warp(x, flow), want)  # the CPU path is the reference, not the interpreter
        assert torch.equal(warp(x, flow, r), r + want)
    with use_fast_path(False):
        assert torch.equal(warp(x, flow), want)


def test_a_residual_is_added_and_given_up_only_when_asked():
    x, flow, r = operands()
    want = warp_reference(x, flow) + r
    kept = r.clone()
    with use_fast_path(False):
        torch.testing.assert_close(warp(x, flow, r), want)
        assert torch.equal(r, kept)  # not asked: untouched
        got = warp(x, flow, r, inplace=True)
    torch.testing.assert_close(got, want)
    assert got.data_ptr() == r.data_ptr()  # asked, nothing recorded: the sum took the residual's memory


def test_gradients_flow_through_the_reference_and_leave_the_residual_alone():
    x, flow, r = (t.clone().requires_grad_(True) for t in operands(b=1, c=3, hw=(6, 7)))
    kept = r.detach().clone()
    warp(x, flow, r, inplace=True).square().sum().backward()
    x2, flow2, r2 = (t.detach().clone().requires_grad_(True) for t in (x, flow, kept))
    (warp_reference(x2, flow2) + r2).square().sum().backward()
    assert torch.equal(r.detach(), kept)
    for got, want in ((x, x2), (flow, flow2), (r, r2)):
        torch.testing.assert_close(got.grad, want.grad)


def test_bad_shapes_are_named():
    x, flow, r = operands()
    with pytest.raises(ValueError, match="flow must have shape"):
        warp(x, flow[:, :1])
    with pytest.raises(ValueError, match="residual must have the input's shape"):
        warp(x, flow, r[:, :2])
    with pytest.raises(ValueError, match="4-D"):
        warp(x[0], flow)
    with pytest.raises(ValueError, match="one device"):
        warp(x, flow, r.to("meta"))  # (a CPU residual for a CUDA map would reach the kernel otherwise)


def test_a_failing_warp_kernel_falls_back_to_the_reference_once_with_a_warning():
    from shortcutify.ops import fast_path as module

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this card")

    x, flow, r = operands(b=1, c=3, hw=(5, 6))
    saved = dict(module._AVAILABLE), dict(module._TRITON)
    try:
        module._AVAILABLE[x.device.type] = True
        module._TRITON["warp"] = broken
        with pytest.warns(UserWarning, match="Triton kernel 'warp' failed.*no kernel for this card"):
            got = torch.ops.shortcutify.warp(x, flow, r)
        torch.testing.assert_close(got, warp_reference(x, flow) + r)
        assert not module.fast_path_available(x.device)
    finally:
        for cache, kept in zip((module._AVAILABLE, module._TRITON), saved):
            cache.clear()
            cache.update(kept)
