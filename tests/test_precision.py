"""Low precision: the block under ``torch.autocast`` and after ``.to(bfloat16/float16)``.

An untrained block's reconstruction is zero-initialised and hides every error, so these
tests use blocks whose every parameter is random and non-zero, with offsets and flows that
reach outside the feature map.
"""

import math

import pytest
import torch

from shortcutify import KeyframeTaps, make_block
from shortcutify.ops import deform_conv2d, warp
from shortcutify.ops.deform import sampling_dtype

LOW = [torch.bfloat16, torch.float16]
# bfloat16 keeps 8 significant bits, float16 11: PSNR of the feature vs float32 (over its
# peak-to-peak range); with positions in the low dtype (the bug these tests pin) bfloat16 fell
# far below and float16 gave NaN
MIN_PSNR = {torch.bfloat16: 40.0, torch.float16: 55.0}


def randomised(resolution: str, enc: int = 12, dec: int = 16, seed: int = 0):
    """A block with random non-zero weights; its offsets reach a few pixels out of a 16-px map."""
    gen = torch.Generator().manual_seed(seed)
    block = make_block(resolution, enc, dec)
    with torch.no_grad():
        for p in block.parameters():
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        k2 = block.kernel_size**2
        block.adabd_head[-1].bias[: 2 * k2].copy_(torch.randn(2 * k2, generator=gen) * 6.0)  # offsets of several px
        block.flow_head[-1].bias.copy_(torch.tensor([2.5, -3.0]))
    return block.eval()


def taps(seed: int = 1, b: int = 2, enc: int = 12, dec: int = 16, hw=(16, 20)):
    gen = torch.Generator().manual_seed(seed)
    a_ref = torch.randn(b, enc, *hw, generator=gen)
    a = a_ref + 0.3 * torch.randn(b, enc, *hw, generator=gen)
    f_ref = torch.randn(b, dec, 2 * hw[0], 2 * hw[1], generator=gen)
    return a, a_ref, f_ref


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    span = (ref.max() - ref.min()).item()
    return 10 * math.log10(span**2 / ((x - ref) ** 2).mean().item())


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("resolution", ["half", "full"])
def test_autocast_runs_both_layouts_close_to_float32(resolution, dtype):
    block = randomised(resolution)
    a, a_ref, f_ref = taps()
    with torch.no_grad():
        ref = block(a, KeyframeTaps(a_ref, f_ref)).feature
        with torch.autocast("cpu", dtype=dtype):
            low = block(a, KeyframeTaps(a_ref, f_ref)).feature
            reference = block.prepare_reference(a_ref, f_ref)
            low2 = block(a, reference).feature
    assert torch.isfinite(low).all() and low.shape == ref.shape
    assert torch.equal(low, low2)
    assert psnr(low, ref) >= MIN_PSNR[dtype]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("resolution", ["half", "full"])
def test_a_block_cast_to_low_precision_stays_close_to_float32(resolution, dtype):
    block = randomised(resolution)
    a, a_ref, f_ref = taps()
    with torch.no_grad():
        ref = block(a, KeyframeTaps(a_ref, f_ref)).feature
        low = block.to(dtype)(a.to(dtype), KeyframeTaps(a_ref.to(dtype), f_ref.to(dtype))).feature
    assert low.dtype == dtype and torch.isfinite(low).all()
    assert psnr(low, ref) >= MIN_PSNR[dtype]


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_gradients_are_finite(dtype):
    block = randomised("half").train()
    a, a_ref, f_ref = taps()
    with torch.autocast("cpu", dtype=dtype):
        out = block(a, KeyframeTaps(a_ref, f_ref), return_aligned=True)
        loss = out.feature.float().square().mean() + out.aligned.float().square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


@pytest.mark.parametrize("dtype", LOW)
def test_sampling_positions_are_float32_for_low_precision_inputs(dtype):
    # a 600-px-wide map: bfloat16 cannot even hold the position 301 (its neighbours are 300 and 302)
    x = (torch.arange(600.0) % 7).view(1, 1, 1, 600).expand(1, 1, 3, 600).to(dtype)  # exact in the dtype
    flow = torch.zeros(1, 2, 3, 600, dtype=dtype)
    flow[:, 1] = 0.25  # a quarter pixel to the right, also exact
    got = warp(x, flow)
    # values are rounded to the dtype once, at the end; positions are not rounded at all
    assert torch.equal(got, warp(x.float(), flow.float()).to(dtype))
    assert torch.equal(got[..., :-1], (0.75 * x[..., :-1].float() + 0.25 * x[..., 1:].float()).to(dtype))
    assert sampling_dtype(x.to(dtype), flow.to(dtype)) == torch.float32
    assert sampling_dtype(x.double(), flow) == torch.float64


def test_deform_conv_accepts_offsets_and_masks_of_another_floating_dtype():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 9, 11, generator=gen)
    w = torch.randn(4, 3, 3, 3, generator=gen)
    off = torch.randn(1, 18, 9, 11, generator=gen) * 3
    mask = torch.rand(1, 9, 9, 11, generator=gen)
    want = deform_conv2d(x, off, w, padding=1, mask=mask)
    got = deform_conv2d(x, off.half().float().half(), w, padding=1, mask=mask.half())
    close = deform_conv2d(x, off.half().float(), w, padding=1, mask=mask.half().float())
    assert got.dtype == torch.float32 and torch.allclose(got, close, atol=1e-5)
    assert (got - want).abs().max() < 0.1  # only the offsets' and mask's own rounding
    with pytest.raises(TypeError, match="offset must be a floating-point"):
        deform_conv2d(x, off.long(), w, padding=1)
    with pytest.raises(TypeError, match="mask must be a floating-point"):
        deform_conv2d(x, off, w, padding=1, mask=(mask > 0.5))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("resolution", ["half", "full"])
def test_the_stateful_module_runs_in_low_precision(resolution, dtype):
    from shortcutify import shortcutify
    from shortcutify.demo.models import ResnetGenerator

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    frames = [torch.randn(2, 3, 16, 16) + 0.1 * i for i in range(4)]
    sv = shortcutify(gen, "model.4", "model.12", frames[0], interval=3, resolution=resolution)
    sv.block.load_state_dict(randomised(resolution, enc=sv.block.enc_channels, dec=sv.block.dec_channels).state_dict())
    with torch.no_grad():
        want = [sv(x) for x in frames]
        sv.reset()
        with torch.autocast("cpu", dtype=dtype):
            auto = [sv(x) for x in frames]
        sv.to(dtype)  # (moving or casting the module starts new streams)
        cast = [sv(x.to(dtype)) for x in frames]
    for got in (auto, cast):
        for w, g in zip(want, got):
            assert torch.isfinite(g).all() and psnr(g, w) >= MIN_PSNR[dtype] - 10  # through the tail's convs too
    assert cast[1].dtype == dtype
