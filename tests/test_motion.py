"""Specification of the parameter-free motion prior (:mod:`shortcutify.ops.motion`) and its use in blocks."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from shortcutify import shortcutify
from shortcutify.core.blocks import PRIOR_LEFT_OUT_EVERY, REDUCED_PRIORS, make_block, motion_pool_for, prior_names
from shortcutify.core.config import ShortcutConfig
from shortcutify.core.cost import count_macs
from shortcutify.demo.models import ResnetGenerator
from shortcutify.ops import MOTION_PRIORS, coarse_features, coarse_grid, coarse_pool, correlation_flow, local_similarities, warp


def _smooth(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(b, c, max(2, h // 4), max(2, w // 4), generator=g), size=(h, w), mode="bilinear")


def _flow(x: torch.Tensor, ref: torch.Tensor, **kw) -> torch.Tensor:
    grid = coarse_grid(tuple(x.shape[-2:]))
    return correlation_flow(coarse_features(x, grid), coarse_features(ref, grid), tuple(x.shape[-2:]), **kw)


@pytest.mark.parametrize("shift", [(0, 6), (3, 0), (-4, -5), (2, -3)])
def test_a_translation_is_found_with_the_warp_convention(shift):
    """``x[p] = ref[p - s]`` (content moved by ``s``) gives ``flow ≈ -s``, and the warp by it aligns ``ref`` to ``x``."""
    ref = _smooth(1, 16, 48, 80)
    x = torch.roll(ref, shifts=shift, dims=(2, 3))
    flow = _flow(x, ref)
    inner = flow[:, :, 12:-12, 16:-16].mean(dim=(0, 2, 3))
    assert torch.allclose(inner, -torch.tensor(shift, dtype=torch.float32), atol=1.0), inner
    err_aligned = (warp(ref, flow) - x)[:, :, 12:-12, 16:-16].abs().mean()
    err_static = (ref - x)[:, :, 12:-12, 16:-16].abs().mean()
    assert err_aligned < 0.5 * err_static


def test_identical_maps_give_no_motion():
    ref = _smooth(2, 8, 30, 40)
    assert _flow(ref, ref).abs().max() < 0.05  # a soft arg-max: a small pull of the neighbours, no motion


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 2), c=st.integers(1, 6), h=st.integers(1, 50), w=st.integers(1, 50), regions=st.integers(0, 3),
       radius=st.integers(0, 4), seed=st.integers(0, 10))
def test_any_maps_give_a_finite_flow_that_stays_inside(b, c, h, w, regions, radius, seed):
    g = torch.Generator().manual_seed(seed)
    x, ref = torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g)
    flow = _flow(x, ref, regions=regions, radius=radius)
    assert flow.shape == (b, 2, h, w) and torch.isfinite(flow).all()
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    assert ((ys + flow[:, 0]) >= -1e-4).all() and ((ys + flow[:, 0]) <= h - 1 + 1e-4).all()
    assert ((xs + flow[:, 1]) >= -1e-4).all() and ((xs + flow[:, 1]) <= w - 1 + 1e-4).all()


def test_constant_maps_give_no_motion():
    """Featureless input: every displacement scores the same, the expectation is zero."""
    x = torch.ones(1, 4, 20, 30)
    assert _flow(x, x).abs().max() < 1e-4


@pytest.mark.parametrize("kw", [{"radius": -1}, {"radius": 1.5}, {"regions": -1}, {"temperature": 0.0}])
def test_bad_settings_are_refused(kw):
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=next(iter(kw))):
        correlation_flow(x, x, (8, 8), **kw)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        correlation_flow(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 9), (8, 8))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        coarse_features(torch.randn(4, 8, 8), (4, 4))


def test_the_correlation_macs_are_counted():
    """The row products cost ``C·(2r+1)·(w+2r)`` MACs per coarse position (what runs, not only the
    ``C·(2r+1)²`` used), the unit length ``C`` per position and the pooling one per input element,
    and the count includes them all."""
    c, r, h, w = 8, 3, 10, 12
    a = torch.randn(1, c, 2 * h, 2 * w)
    x = coarse_features(a, (h, w))
    macs, ops, _ = count_macs(lambda a, b: correlation_flow(a, b, (20, 24), radius=r, regions=0), x, x)
    k = 2 * r + 1
    assert ops["bmm"] == c * k * (w + 2 * r) * h * w
    assert macs >= ops["bmm"]
    macs, ops, _ = count_macs(lambda t: coarse_features(t, (h, w)), a)
    assert ops["einsum"] == c * h * w  # squared lengths
    assert macs == ops["einsum"] + c * 2 * h * 2 * w  # + the pooling: one per input element


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_an_untrained_block_with_the_prior_follows_a_translation(resolution):
    """Without the prior an untrained block repeats the reference feature; with it, it moves it."""
    torch.manual_seed(0)
    a_ref, f_ref = _smooth(1, 8, 24, 40, seed=1), _smooth(1, 6, 24, 40, seed=2)
    shift = (0, 4)
    a, f = torch.roll(a_ref, shift, dims=(2, 3)), torch.roll(f_ref, shift, dims=(2, 3))
    inner = (slice(None), slice(None), slice(4, -4), slice(8, -8))
    errors = {}
    for prior in (False, True):
        block = make_block(resolution, 8, 6, motion_prior=prior).eval()
        with torch.no_grad():
            f_hat = block(a, block.prepare_reference(a_ref, f_ref)).feature
        errors[prior] = (f_hat - f)[inner].abs().mean()
        if not prior:
            torch.testing.assert_close(f_hat, f_ref)
    assert errors[True] < 0.5 * errors[False]


def test_the_prior_is_part_of_the_config_and_old_configs_keep_theirs():
    x = torch.randn(1, 3, 32, 32)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", x, motion_prior=True)
    assert sv.config.motion_prior == sv.block.motion_prior == "local"  # True builds the current estimator
    d = sv.config.to_dict()
    assert ShortcutConfig.from_dict(d).motion_prior == "local"
    assert ShortcutConfig.from_dict({**d, "motion_prior": True}).motion_prior == "regional"  # saved by 0.5 to 0.9
    assert ShortcutConfig.from_dict({**d, "motion_prior": False}).motion_prior is None
    del d["motion_prior"]
    assert ShortcutConfig.from_dict(d).motion_prior is None  # saved before 0.5
    with pytest.raises(ValueError, match="motion_prior"):
        ShortcutConfig.from_dict({**d, "motion_prior": "yes"})
    with pytest.raises(TypeError, match="motion_prior"):
        shortcutify(gen, "model.4", "model.12", x, motion_prior=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="regional"):
        shortcutify(gen, "model.4", "model.12", x, motion_prior="global")


@pytest.mark.parametrize(("size", "pool"), [((1, 1), 1), ((40, 40), 1), ((41, 10), 2), ((10, 80), 2), ((48, 112), 3), ((512, 1024), 26)])
def test_the_pool_brings_the_longer_side_to_at_most_forty(size, pool):
    assert coarse_pool(size) == pool
    grid = coarse_grid(size)
    assert grid == (-(-size[0] // pool), -(-size[1] // pool)) and max(grid) <= 40


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 200), w=st.integers(1, 200), pool=st.integers(1, 9))
def test_a_fixed_pool_gives_the_grid_of_that_pool_on_any_map(h, w, pool):
    assert coarse_grid((h, w), pool=pool) == (-(-h // pool), -(-w // pool))


@pytest.mark.parametrize("pool", [0, -1, 1.5, True, "2"])
def test_a_bad_pool_is_refused(pool):
    with pytest.raises(ValueError, match="pool"):
        coarse_grid((8, 8), pool=pool)
    with pytest.raises(ValueError, match="motion_pool"):
        make_block("full", 8, 6, motion_prior=True, motion_pool=pool)


def test_shortcutify_fixes_the_pool_for_the_frame_it_was_built_on_and_load_keeps_it(tmp_path):
    """The prior's coarse grid is pooled as on the example's frame, on inputs of any size (a crop,
    as in distillation, searches as far in pixels as the whole frame); without the prior there is no pool."""
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 96, 224)
    sv = shortcutify(gen, "model.4", "model.12", x, motion_prior=True)
    dec_size = tuple(sv.config.dec_shape[-2:])
    assert sv.block.motion_pool == motion_pool_for(dec_size) == coarse_pool(((dec_size[0] + 1) // 2, (dec_size[1] + 1) // 2)) > 1
    assert "motion_pool=" in repr(sv.block)
    sv.save(tmp_path / "b")
    from shortcutify import load

    assert load(gen, tmp_path / "b").block.motion_pool == sv.block.motion_pool
    assert shortcutify(gen, "model.4", "model.12", x).block.motion_pool is None


def test_a_fixed_pool_finds_on_a_crop_the_motion_it_finds_on_the_whole_map():
    """A shift beyond the crop's own search range (radius × its own pool) but within the block's
    (radius × the whole map's pool) is found on the crop only with the whole map's pool."""
    radius = MOTION_PRIORS["local"]["radius"]
    ref = _smooth(1, 16, 32, 32, seed=3)
    shift = (0, radius + 3)  # beyond radius × 1 (the 32-pixel crop's own pool), within radius × 2
    x = torch.roll(ref, shifts=shift, dims=(2, 3))
    inner = (slice(None), 1, slice(10, -10), slice(12, -12))
    found = {}
    for pool in (None, 2):
        block = make_block("full", 16, 6, motion_prior=True, motion_pool=pool)
        grid = (32, 32)
        flow = block._prior(x, block.motion_features(ref, grid), grid)
        found[pool] = float(flow[inner].mean())
    assert coarse_pool((32, 32)) == 1
    assert abs(found[2] + shift[1]) < 1.5, found
    assert abs(found[None] + shift[1]) > 2.5, found


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_in_training_every_second_sample_goes_without_the_prior(resolution):
    """A training step (training mode, gradients recorded): samples 1, 3, ... of a batch get no prior (their
    flow is the flow head's alone), the others the same prior as in eval mode; eval mode, or training mode
    without gradients (frames streamed by a module left in training mode): every sample gets it."""
    assert PRIOR_LEFT_OUT_EVERY == 2
    a_ref, f_ref = _smooth(1, 8, 24, 40, seed=1), _smooth(1, 6, 24, 40, seed=2)
    a = torch.roll(a_ref, (0, 4), dims=(2, 3))
    block = make_block(resolution, 8, 6, motion_prior=True)
    ref = block.prepare_reference(a_ref.expand(5, -1, -1, -1), f_ref.expand(5, -1, -1, -1))
    grid = tuple(ref.enc_half.shape[-2:]) if resolution == "full" else tuple(ref.reduced.shape[-2:])
    batch = a.expand(5, -1, -1, -1)
    block.eval()
    full = block._prior(batch, ref.motion, grid)
    assert full.abs().amax(dim=(1, 2, 3)).min() > 1.0  # a shift of 4: every sample moves
    block.train()
    trained = block._prior(batch, ref.motion, grid)
    torch.testing.assert_close(trained[0::2], full[0::2])
    assert trained[1::2].abs().max() == 0
    torch.testing.assert_close(block._prior(batch[:1], ref.motion[:1], grid), full[:1])  # a batch of one keeps it
    with torch.no_grad():
        torch.testing.assert_close(block._prior(batch, ref.motion, grid), full)


def test_distill_warns_when_batches_are_too_small_to_leave_the_prior_out():
    from shortcutify import distill

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    clips = [torch.randn(4, 3, 16, 16)]
    with_prior = shortcutify(gen, "model.4", "model.12", clips[0][:1], motion_prior=True)
    with pytest.warns(UserWarning, match="batch_size=1.*motion prior"):
        distill(with_prior, clips, steps=1, batch_size=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distill(with_prior, clips, steps=1, batch_size=2, progress=False)
        distill(shortcutify(gen, "model.4", "model.12", clips[0][:1]), clips, steps=1, batch_size=1, progress=False)


def test_each_estimator_gives_what_its_settings_give():
    """A block computes the estimator its ``motion_prior`` names, with that estimator's settings."""
    torch.manual_seed(0)
    a_ref, f_ref = _smooth(1, 8, 24, 40, seed=1), _smooth(1, 6, 24, 40, seed=2)
    a = torch.roll(a_ref, (1, 3), dims=(2, 3))
    for name, kw in MOTION_PRIORS.items():
        block = make_block("half", 8, 6, motion_prior=name).eval()
        ref = block.prepare_reference(a_ref, f_ref)
        grid = tuple(ref.reduced.shape[-2:])
        expected = correlation_flow(block.motion_features(a, grid), ref.motion, grid, **kw)
        torch.testing.assert_close(block._prior(a, ref.motion, grid), expected)


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 2), c=st.integers(1, 5), h=st.integers(1, 12), w=st.integers(1, 12), radius=st.integers(0, 4),
       seed=st.integers(0, 10))
def test_local_similarities_are_the_dot_products_with_the_displaced_reference(b, c, h, w, radius, seed):
    """Against a naive reference: one dot product per position and displacement, replicate padding."""
    g = torch.Generator().manual_seed(seed)
    x, ref = torch.randn(b, c, h, w, generator=g, dtype=torch.float64), torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    got = local_similarities(x, ref, radius)
    k = 2 * radius + 1
    naive = torch.empty(b, k * k, h, w, dtype=torch.float64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            for i in range(h):
                for j in range(w):
                    y, z = min(max(i + dy, 0), h - 1), min(max(j + dx, 0), w - 1)
                    naive[:, (dy + radius) * k + dx + radius, i, j] = (x[:, :, i, j] * ref[:, :, y, z]).sum(1)
    torch.testing.assert_close(got, naive)
    with torch.no_grad(), warnings.catch_warnings():  # traced (as for the MAC count): same numbers
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(lambda p, q: local_similarities(p, q, radius), (x, ref), check_trace=False)
    torch.testing.assert_close(traced(x, ref), naive)


def test_the_margin_keeps_ambiguous_positions_still():
    """Flat content matches every displacement equally: with a margin no motion is estimated
    there, while a textured moving region keeps its displacement."""
    ref = _smooth(1, 16, 40, 40)
    ref[:, :, :, :20] = ref[:, :, :, :20].mean(dim=(2, 3), keepdim=True)  # the left half featureless
    x = ref.clone()
    x[:, :, :, 20:] = torch.roll(ref, 3, dims=3)[:, :, :, 20:]  # the right half moved 3 to the right
    flow = _flow(x, ref, regions=0, window=1, margin=0.1, temperature=0.01, radius=4)
    assert flow[:, :, :, :14].abs().max() < 1e-3
    assert (flow[0, 1, 8:-8, 26:-8] + 3).abs().mean() < 1.0


@pytest.mark.parametrize("kw", [{"window": -1}, {"margin": -0.5}])
def test_bad_local_settings_are_refused(kw):
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=next(iter(kw))):
        correlation_flow(x, x, (8, 8), regions=0, **kw)


@pytest.mark.parametrize("kw", [MOTION_PRIORS["local"], MOTION_PRIORS["regional"]])
def test_the_flow_does_not_depend_on_the_memory_layout_of_the_similarities(monkeypatch, kw):
    """Pooling keeps the displacements innermost on CPU; another device's pooling may not (the
    similarities then arrive in another layout): the same flow either way."""
    import shortcutify.ops.motion as motion

    x = coarse_features(torch.randn(2, 8, 12, 14), (12, 14))
    ref = coarse_features(torch.randn(2, 8, 12, 14), (12, 14))
    want = correlation_flow(x, ref, (24, 28), **kw)
    rows = motion._row_similarities
    monkeypatch.setattr(motion, "_row_similarities", lambda *a: rows(*a).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1))
    torch.testing.assert_close(correlation_flow(x, ref, (24, 28), **kw), want)


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 6), hh=st.integers(1, 24), ww=st.integers(1, 24), h=st.integers(1, 12), w=st.integers(1, 12),
       seed=st.integers(0, 10))
def test_coarse_features_are_the_pooled_centred_unit_vectors(c, hh, ww, h, w, seed):
    """Against the plain formula: adaptive average pooling (whatever the ratio of the sizes, whole
    or not), channel means removed, ``F.normalize`` with ``eps=1e-6``."""
    h, w = min(h, hh), min(w, ww)
    x = torch.randn(2, c, hh, ww, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    pooled = F.adaptive_avg_pool2d(x, (h, w))
    centred = pooled - pooled.mean(dim=(2, 3), keepdim=True)
    want = F.normalize(centred, dim=1, eps=1e-6)
    got = coarse_features(x, (h, w))
    # computed in float32: the rounding of a centred vector is scaled up by 1/|vector|, so vectors nearly zero
    # (drawn now and then; all of them on a 1x1 grid, where they are exactly zero) are held to a unit length at most
    norms = centred.norm(dim=1, keepdim=True).expand_as(centred)
    kept = norms > 1e-4
    shortest = float(norms[kept].min()) if kept.any() else 1.0
    torch.testing.assert_close(got[kept], want.float()[kept], rtol=1e-5, atol=1e-6 / min(1.0, shortest))
    assert bool(torch.isfinite(got).all()) and bool((got.norm(dim=1) <= 1 + 1e-5).all())


# ------------------------------------------------------------------ the prior on the reduced encoder features
def _reduced_on_grid(block, a: torch.Tensor, ref) -> tuple[torch.Tensor, tuple[int, int]]:
    """The block's reduced encoder features of ``a`` on its flow grid, as its forward pass computes them."""
    if block.resolution == "half":
        reduced = block.reduce_encoder_tap(a, tuple(ref.feature.shape[-2:]))
        return reduced, tuple(reduced.shape[-2:])
    grid = tuple(ref.enc_half.shape[-2:])
    full = F.relu(block.reduce_enc(F.interpolate(a, size=tuple(ref.stacked.shape[-2:]), mode="bilinear", align_corners=False)))
    return F.interpolate(full, size=grid, mode="bilinear", align_corners=False), grid


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_a_reduced_prior_compares_the_blocks_reduced_encoder_features(resolution):
    """``"local-reduced"`` is ``"local"``'s estimator on the reduced encoder features (``h`` channels),
    not on the tap: the reference's are kept at the keyframe, the current frame's are the flow head's input."""
    assert REDUCED_PRIORS == {"local-reduced": "local"} and "local-reduced" in prior_names()
    torch.manual_seed(0)
    a_ref, f_ref = _smooth(1, 12, 24, 40, seed=1), _smooth(1, 6, 24, 40, seed=2)
    a = torch.roll(a_ref, (1, 3), dims=(2, 3))
    block = make_block(resolution, 12, 6, width=4, motion_prior="local-reduced").eval()
    with torch.no_grad():
        ref = block.prepare_reference(a_ref, f_ref)
        assert ref.motion.shape[1] == 4  # the block's width, not the tap's 12 channels
        reduced, grid = _reduced_on_grid(block, a, ref)
        ref_reduced, _ = _reduced_on_grid(block, a_ref, ref)
        want = correlation_flow(coarse_features(reduced, coarse_grid(grid)), coarse_features(ref_reduced, coarse_grid(grid)), grid,
                                **MOTION_PRIORS["local"])
        torch.testing.assert_close(ref.motion, coarse_features(ref_reduced, coarse_grid(grid)))
        torch.testing.assert_close(block._prior(a, ref.motion, grid, reduced), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="reduced="):
        block.motion_features(a, grid)  # the reduced features are required


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_an_untrained_block_with_the_reduced_prior_follows_a_translation(resolution):
    """As with the tap's prior: an untrained block (random reductions) moves the reference feature."""
    torch.manual_seed(0)
    a_ref, f_ref = _smooth(1, 16, 24, 40, seed=1), _smooth(1, 6, 24, 40, seed=2)
    a, f = torch.roll(a_ref, (0, 4), dims=(2, 3)), torch.roll(f_ref, (0, 4), dims=(2, 3))
    inner = (slice(None), slice(None), slice(4, -4), slice(8, -8))
    errors = {}
    for prior in (None, "local-reduced"):
        torch.manual_seed(1)
        block = make_block(resolution, 16, 6, width=8, motion_prior=prior).eval()
        with torch.no_grad():
            errors[prior] = (block(a, block.prepare_reference(a_ref, f_ref)).feature - f)[inner].abs().mean()
    assert errors["local-reduced"] < 0.5 * errors[None]


def test_a_reduced_prior_is_stored_by_name_and_costs_fewer_macs_on_a_wide_tap():
    x = torch.randn(1, 3, 64, 64)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = {p: shortcutify(gen, "model.4", "model.12", x, motion_prior=p) for p in (None, "local", "local-reduced")}
    assert sv["local-reduced"].config.motion_prior == sv["local-reduced"].block.motion_prior == "local-reduced"
    assert ShortcutConfig.from_dict(sv["local-reduced"].config.to_dict()).motion_prior == "local-reduced"
    macs = {p: s.cost().shortcut.macs for p, s in sv.items()}
    assert macs[None] < macs["local-reduced"] < macs["local"]  # counted, and on 8 of the tap's 16 channels
    with pytest.raises(ValueError, match="local-reduced"):  # the message lists it among the accepted names
        shortcutify(gen, "model.4", "model.12", x, motion_prior="reduced")
