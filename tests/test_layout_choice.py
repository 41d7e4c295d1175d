"""Specification of ``resolution="auto"`` (the default): the block layout chosen from the taps."""

import pytest
import torch

from shortcutify import load, shortcutify, suggest_taps
from shortcutify.core.blocks.sizing import FULL_MACS_RATIO, FULL_WIDTH_FLOOR, auto_layout
from shortcutify.demo.models import ResnetGenerator, resnet_taps


def _fake_macs(half_per_w2: float, full_per_w2: float):
    """Block MACs growing with the width squared, per layout."""
    return lambda layout, w: int((half_per_w2 if layout == "half" else full_per_w2) * w * w)


def test_the_full_layout_at_half_the_width_is_chosen_where_it_costs_about_the_same():
    # the half layout's automatic width is half the narrower tap: 32; the full one at 16 costs 4x per w^2
    layout, width, macs = auto_layout((1, 64, 8, 8), (1, 64, 8, 8), 10**9, _fake_macs(1.0, 4.0))
    assert (layout, width, macs) == ("full", 16, 4 * 16 * 16)


def test_the_half_layout_stays_where_the_full_one_would_cost_more():
    layout, width, _ = auto_layout((1, 64, 8, 8), (1, 64, 8, 8), 10**9, _fake_macs(1.0, 4.0 * FULL_MACS_RATIO * 1.01))
    assert (layout, width) == ("half", 32)


def test_narrow_taps_keep_the_half_layout_because_the_full_width_has_a_floor():
    # half width 8 -> the full block is no narrower than the floor, so it costs 4x the half one
    assert FULL_WIDTH_FLOOR == 8
    layout, width, _ = auto_layout((1, 16, 8, 8), (1, 16, 8, 8), 10**9, _fake_macs(1.0, 4.0))
    assert (layout, width) == ("half", 8)


def test_a_full_block_that_costs_what_the_cut_skips_is_not_chosen():
    skipped = 4 * 16 * 16  # the full block would cost exactly what the cut skips; the half one half of it
    layout, _, macs = auto_layout((1, 64, 8, 8), (1, 64, 8, 8), skipped, _fake_macs(0.5, 4.0))
    assert layout == "half" and macs < skipped


@pytest.mark.parametrize("ngf, layout, width", [(16, "full", 8), (8, "half", 8)])
def test_shortcutify_builds_the_chosen_layout_by_default_and_reports_it(ngf, layout, width):
    gen = ResnetGenerator(ngf=ngf, n_blocks=2).eval()
    x = torch.randn(1, 3, 32, 48)
    sv = shortcutify(gen, *resnet_taps(gen), x)
    assert (sv.block.resolution, sv.block.width) == (layout, width)
    assert (sv.config.resolution, sv.config.width) == (layout, width)
    half = shortcutify(gen, *resnet_taps(gen), x, resolution="half")
    full = shortcutify(gen, *resnet_taps(gen), x, resolution="full", width=width)
    chosen = {"half": half, "full": full}[layout]
    assert sv.cost().block.macs == chosen.cost().block.macs
    if layout == "full":
        assert full.cost().block.macs <= FULL_MACS_RATIO * half.cost().block.macs


def test_an_explicit_width_keeps_the_automatic_layout():
    gen = ResnetGenerator(ngf=16, n_blocks=2).eval()
    x = torch.randn(1, 3, 32, 48)
    sv = shortcutify(gen, *resnet_taps(gen), x, width=4)
    assert (sv.block.resolution, sv.block.width) == ("full", 4)
    assert sv.cost().block.macs == shortcutify(gen, *resnet_taps(gen), x, resolution="full", width=4).cost().block.macs


def test_a_saved_auto_block_loads_as_the_layout_it_was(tmp_path):
    gen = ResnetGenerator(ngf=16, n_blocks=2).eval()
    x = torch.randn(1, 3, 32, 48)
    sv = shortcutify(gen, *resnet_taps(gen), x)
    sv.save(tmp_path)
    again = load(gen, tmp_path, example_inputs=x)
    assert (again.block.resolution, again.block.width) == (sv.block.resolution, sv.block.width)


@pytest.mark.parametrize("bad", ["quarter", "AUTO", None, 2])
def test_an_unknown_layout_is_refused_naming_the_choices(bad):
    gen = ResnetGenerator(ngf=8, n_blocks=1).eval()
    with pytest.raises(ValueError, match="'auto'.*'half'.*'full'"):
        shortcutify(gen, *resnet_taps(gen), torch.randn(1, 3, 16, 16), resolution=bad)
    with pytest.raises(ValueError, match="'auto'"):
        suggest_taps(gen, torch.randn(1, 3, 16, 16), resolution=bad)


def test_suggest_taps_reports_the_layout_shortcutify_builds_for_each_pair():
    gen = ResnetGenerator(ngf=16, n_blocks=2).eval()
    x = torch.randn(1, 3, 32, 48)
    found = suggest_taps(gen, x, top=3)
    for s in found:
        sv = shortcutify(gen, s.enc_layer, s.dec_layer, x)
        assert (sv.block.resolution, sv.block.width, sv.cost().block.macs) == (s.resolution, s.width, s.block_macs)
    table = str(found)
    assert "block" in table and all(s.resolution in table for s in found)
