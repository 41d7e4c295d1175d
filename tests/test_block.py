"""Specification of the shortcut block (AdaBD) and its sizing."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shortcutify import FullResolutionBlock, HalfResolutionBlock, KeyframeTaps, ShortcutBlock, make_block
from shortcutify.core.blocks import default_width
from shortcutify.ops import adabd_conv, deform_conv2d


@pytest.mark.parametrize(
    "enc_shape, dec_shape",
    [
        ((2, 16, 8, 8), (2, 16, 8, 8)),  # same width, same resolution
        ((2, 12, 16, 16), (2, 20, 8, 8)),  # encoder tap at twice the decoder tap's resolution
        ((2, 24, 4, 4), (2, 8, 8, 8)),  # encoder tap at half the resolution
        ((1, 8, 7, 5), (1, 6, 7, 5)),  # odd sizes
        ((1, 4, 1, 1), (1, 4, 1, 1)),  # a single pixel
    ],
)
@pytest.mark.parametrize("resolution", ["half", "full"])
def test_block_predicts_the_decoder_tap_shape(enc_shape, dec_shape, resolution):
    block = make_block(resolution, enc_shape[1], dec_shape[1])
    a_ref, a = torch.randn(enc_shape), torch.randn(enc_shape)
    f_ref = torch.randn(dec_shape)
    f_hat, aligned = block(a, block.prepare_reference(a_ref, f_ref))
    assert f_hat.shape == dec_shape and aligned is None
    assert torch.isfinite(f_hat).all()
    f_hat2, aligned = block(a, block.prepare_reference(a_ref, f_ref), return_aligned=True)
    assert aligned.shape == dec_shape and torch.equal(f_hat, f_hat2)


def test_width_is_derived_from_the_taps_and_overridable():
    assert default_width(128, 128) == 64  # the paper's RecycleGAN setting
    assert default_width(256, 64) == 32
    assert default_width(4, 4) == 4
    assert HalfResolutionBlock(128, 128).width == 64
    assert HalfResolutionBlock(128, 128, width=16).width == 16
    small = sum(p.numel() for p in HalfResolutionBlock(64, 64, width=8).parameters())
    big = sum(p.numel() for p in HalfResolutionBlock(64, 64, width=32).parameters())
    assert small < big
    with pytest.raises(ValueError, match="width"):
        HalfResolutionBlock(8, 8, width=0)


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_offset_and_mask_predictors_start_at_zero_output(resolution):
    block = make_block(resolution, 8, 8)
    last_flow, last_adabd = block.flow_head[-1], block.adabd_head[-1]
    for conv in (last_flow, last_adabd):
        assert torch.count_nonzero(conv.weight) == 0 and torch.count_nonzero(conv.bias) == 0
    seen = {}
    block.adabd_head.register_forward_hook(lambda m, i, o: seen.setdefault("adabd", o))
    block.flow_head.register_forward_hook(lambda m, i, o: seen.setdefault("flow", o))
    a = torch.randn(1, 8, 6, 6)
    block(a, block.prepare_reference(torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)))
    assert torch.count_nonzero(seen["flow"]) == 0  # identity warp
    assert torch.count_nonzero(seen["adabd"]) == 0  # zero offsets, mask sigmoid(0) = 0.5


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_an_untrained_block_reuses_the_reference_feature(resolution):
    """Zero flow (zero-initialised flow head) and a zero-initialised reconstruction."""
    block = make_block(resolution, 8, 6)
    a_ref, f_ref = torch.randn(2, 8, 6, 6), torch.randn(2, 6, 6, 6)
    f_hat, _ = block(torch.randn(2, 8, 6, 6), block.prepare_reference(a_ref, f_ref))
    torch.testing.assert_close(f_hat, f_ref, atol=1e-6, rtol=1e-6)


def test_fused_adabd_equals_two_modulated_deformable_convs_with_shared_weights():
    torch.manual_seed(1)
    b, h, hh, ww = 2, 6, 7, 5
    f_ref, a = torch.randn(b, h, hh, ww, dtype=torch.float64), torch.randn(b, h, hh, ww, dtype=torch.float64)
    offset = 2 * torch.randn(b, 18, hh, ww, dtype=torch.float64)
    m = torch.rand(b, 9, hh, ww, dtype=torch.float64)
    weight, bias = torch.randn(4, h, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    fused, _ = adabd_conv(f_ref, a, offset, m, weight, bias)
    two = (
        deform_conv2d(f_ref, offset, weight, None, padding=1, mask=1 - m)
        + deform_conv2d(a, torch.zeros_like(offset), weight, None, padding=1, mask=m)
        + bias.view(1, -1, 1, 1)
    )
    torch.testing.assert_close(fused, two, atol=1e-10, rtol=1e-10)


def test_mask_one_takes_the_current_frame_and_zero_the_warped_reference():
    b, h = 1, 4
    f_ref, a = torch.randn(b, h, 5, 5), torch.randn(b, h, 5, 5)
    weight = torch.randn(h, h, 3, 3)
    offset = torch.randn(b, 18, 5, 5)
    cur, _ = adabd_conv(f_ref, a, offset, torch.ones(b, 9, 5, 5), weight)
    torch.testing.assert_close(cur, F.conv2d(a, weight, padding=1), atol=1e-5, rtol=1e-5)
    past, _ = adabd_conv(f_ref, a, offset, torch.zeros(b, 9, 5, 5), weight)
    torch.testing.assert_close(past, deform_conv2d(f_ref, offset, weight, padding=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_block_streams_are_independent(resolution):
    block = make_block(resolution, 8, 8)
    for p in block.parameters():  # non-zero predictors so that offsets and flows are live
        torch.nn.init.normal_(p, std=0.2)
    a_ref, f_ref, a = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    out = block(a, block.prepare_reference(a_ref, f_ref))[0]
    a2 = a.clone()
    a2[1] += 1.0
    out2 = block(a2, block.prepare_reference(a_ref, f_ref))[0]
    assert torch.equal(out[0], out2[0]) and not torch.equal(out[1], out2[1])


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_gradients_reach_every_block_parameter(resolution):
    block = make_block(resolution, 8, 8)
    for layer in (block.reconstruct, block.flow_head[-1], block.adabd_head[-1]):  # as after a first step
        torch.nn.init.normal_(layer.weight, std=0.1)
    a_ref, f_ref, a = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    f_hat, aligned = block(a, KeyframeTaps(a_ref, f_ref), return_aligned=True)  # the reference prepared inside
    (f_hat.square().mean() + aligned.square().mean()).backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fused_adabd_is_the_same_with_and_without_autograd():
    """The inference path blends in place; the training path must give the same numbers."""
    torch.manual_seed(2)
    f_ref, a = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    offset, m = torch.randn(2, 18, 6, 7), torch.rand(2, 9, 6, 7)
    weight, bias = torch.randn(3, 5, 3, 3), torch.randn(3)
    with torch.no_grad():
        fast, fast_ref = adabd_conv(f_ref, a, offset, m, weight, bias, reference_only=True)
        fast_only, none = adabd_conv(f_ref, a, offset, m, weight, bias)
    slow, slow_ref = adabd_conv(f_ref.requires_grad_(), a, offset, m, weight, bias, reference_only=True)
    assert none is None
    torch.testing.assert_close(fast, slow.detach())
    torch.testing.assert_close(fast_only, slow.detach())
    torch.testing.assert_close(fast_ref, slow_ref.detach())
    torch.testing.assert_close(fast_ref, deform_conv2d(f_ref.detach(), offset, weight, bias, padding=1))


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_block_output_is_the_same_with_and_without_autograd_and_in_the_teachers_layout(resolution):
    torch.manual_seed(4)
    block = make_block(resolution, 6, 10, width=4)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    a_ref, f_ref, a = torch.randn(2, 6, 9, 11), torch.randn(2, 10, 9, 11), torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        fast, fast_aligned = block(a, block.prepare_reference(a_ref, f_ref), return_aligned=True)
    slow, slow_aligned = block(a, block.prepare_reference(a_ref, f_ref), return_aligned=True)
    torch.testing.assert_close(fast, slow.detach())
    torch.testing.assert_close(fast_aligned, slow_aligned.detach())
    assert fast.is_contiguous()  # what the teacher's tail would have received from its own layer


@pytest.mark.parametrize("grad", [False, True])
def test_layout_changes_keep_values(grad):
    from shortcutify.ops.layout import to_channels_last, to_contiguous

    x = torch.randn(3, 5, 64, 70)
    with torch.set_grad_enabled(grad):
        cl = to_channels_last(x)
        back = to_contiguous(cl)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)
    assert back.is_contiguous() and torch.equal(back, x)

@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last, "channel slice"])
def test_channel_rows_are_the_pixels_channel_vectors_in_any_layout(memory_format):
    from shortcutify.ops.layout import write_channel_rows

    full = torch.randn(2, 9, 6, 7)
    x = full[:, 2:7] if memory_format == "channel slice" else full[:, :5].contiguous(memory_format=memory_format)
    out = torch.empty(2, 6 * 7, 5)
    assert write_channel_rows(x, out) is out
    for b in range(2):
        for y in range(6):
            for i in range(7):
                assert torch.equal(out[b, y * 7 + i], x[b, :, y, i])



def test_the_half_resolution_block_works_at_half_the_decoder_taps_resolution():
    seen = {}
    block = HalfResolutionBlock(8, 8)
    block.adabd_head.register_forward_hook(lambda m, i, o: seen.update(half=o.shape[-2:]))
    block(torch.randn(1, 8, 10, 14), block.prepare_reference(torch.randn(1, 8, 10, 14), torch.randn(1, 8, 10, 14)))
    assert tuple(seen["half"]) == (5, 7)
    full = make_block("full", 8, 8)
    full.adabd_head.register_forward_hook(lambda m, i, o: seen.update(full=o.shape[-2:]))
    full(torch.randn(1, 8, 10, 14), full.prepare_reference(torch.randn(1, 8, 10, 14), torch.randn(1, 8, 10, 14)))
    assert tuple(seen["full"]) == (10, 14)


def test_an_unknown_resolution_is_refused():
    with pytest.raises(ValueError, match="resolution must be one of"):
        make_block("quarter", 8, 8)


def test_the_two_layouts_are_two_block_types_behind_one_protocol():
    half, full = make_block("half", 8, 8), make_block("full", 8, 8)
    assert type(half) is HalfResolutionBlock and type(full) is FullResolutionBlock
    assert isinstance(half, ShortcutBlock) and isinstance(full, ShortcutBlock)
    assert (half.resolution, full.resolution) == ("half", "full")
    with pytest.raises(TypeError):
        ShortcutBlock(8, 8)  # abstract: a layout must be chosen


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_raw_keyframe_taps_are_prepared_inside_the_call(resolution):
    block = make_block(resolution, 8, 6)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    a_ref, f_ref, a = torch.randn(2, 8, 6, 6), torch.randn(2, 6, 6, 6), torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        prepared = block(a, block.prepare_reference(a_ref, f_ref), return_aligned=True)
        raw = block(a, KeyframeTaps(a_ref, f_ref), return_aligned=True)
    assert torch.equal(prepared.feature, raw.feature) and torch.equal(prepared.aligned, raw.aligned)


@pytest.mark.parametrize("width", [2.9, "8", True, 0, -1])
def test_a_width_that_is_not_a_positive_integer_is_refused(width):
    with pytest.raises(ValueError, match="width must be an integer"):
        make_block("half", 8, 8, width=width)


@pytest.mark.parametrize("enc_hw,dec_hw", [((8, 12), (8, 12)), ((4, 6), (9, 13))])
def test_the_half_blocks_reduced_encoder_tap_is_what_its_reference_keeps(enc_hw, dec_hw):
    """reduce_encoder_tap(a, (Hf, Wf)): [B, h, ⌈Hf/2⌉, ⌈Wf/2⌉], the first h channels of the prepared reference."""
    torch.manual_seed(0)
    block = HalfResolutionBlock(6, 5, width=4)
    a, f = torch.randn(2, 6, *enc_hw), torch.randn(2, 5, *dec_hw)
    reduced = block.reduce_encoder_tap(a, dec_hw)
    assert reduced.shape == (2, 4, (dec_hw[0] + 1) // 2, (dec_hw[1] + 1) // 2)
    torch.testing.assert_close(reduced, block.prepare_reference(a, f).reduced[:, :4])


@given(
    channels=st.tuples(st.integers(1, 6), st.integers(1, 5)),
    source=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    target=st.tuples(st.integers(1, 9), st.integers(1, 9)),
)
@settings(max_examples=40, deadline=None)
def test_a_pointwise_conv_of_a_resized_map_may_run_at_either_resolution(channels, source, target):
    """Bilinear resizing and a 1×1 conv with bias commute, up, down, or up along one axis and down the other."""
    from shortcutify.core.blocks.full import pointwise_resized

    torch.manual_seed(sum(source) + 10 * sum(target))
    conv = torch.nn.Conv2d(channels[0], channels[1], 1).double()
    x = torch.randn(2, channels[0], *source, dtype=torch.float64)
    want = conv(F.interpolate(x, size=target, mode="bilinear", align_corners=False)) if source != target else conv(x)
    torch.testing.assert_close(pointwise_resized(conv, x, target), want, rtol=0, atol=1e-12)


def test_the_full_block_reduces_a_coarser_encoder_tap_before_upsampling_it():
    """The encoder tap's 1×1 reduction is counted (and run) at the tap's own resolution when it is coarser."""
    from shortcutify.core.blocks.sizing import block_macs

    enc, dec, h = (1, 32, 8, 8), (1, 16, 16, 16), 8
    coarse, fine = block_macs("full", h, enc, dec), block_macs("full", h, (1, 32, 16, 16), dec)
    # the reduction's MACs at 8×8 instead of 16×16, less the upsampling of its h output channels
    # (fvcore counts bilinear interpolation as 4 multiply-adds per output value)
    assert fine - coarse == 32 * h * (16 * 16 - 8 * 8) - 4 * h * 16 * 16
