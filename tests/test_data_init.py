"""Specification of the block's data-dependent start: principal components of the taps
(``principal_init_``, ``ShortcutBlock.init_reductions``) and ``distill(data_init=...)``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from generators import moving_clips
from shortcutify import KeyframeTaps, distill, make_block, shortcutify
from shortcutify.core.blocks import START_REDUCTIONS
from shortcutify.core.blocks.principal import PatchMoments, principal_init_
from shortcutify.demo.models import ResnetGenerator


def _correlated(b, c, h, w, seed):
    """Inputs ``[b, c, h, w]`` with channels of very different variances, correlated, non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g, dtype=torch.float64) * torch.logspace(0, -2, c, dtype=torch.float64)
    z = torch.randn(b, h, w, c, generator=g, dtype=torch.float64) @ mix.T
    return (z + torch.randn(c, generator=g, dtype=torch.float64)).permute(0, 3, 1, 2).contiguous()


def _naive_patches(x, k):
    """Every ``k×k`` stride-``k`` patch of ``x`` as a row (loops: the reference for unfold)."""
    rows = []
    for b in range(x.shape[0]):
        for i in range(0, x.shape[2] - k + 1, k):
            for j in range(0, x.shape[3] - k + 1, k):
                rows.append(x[b, :, i : i + k, j : j + k].reshape(-1))
    return torch.stack(rows)


@settings(max_examples=25, deadline=None)
@given(c=st.integers(2, 6), h=st.integers(1, 6), k=st.sampled_from([1, 2]), shift=st.sampled_from([0.0, 2.0]),
       seed=st.integers(0, 2**16), split=st.booleans())
def test_the_reduction_becomes_the_leading_principal_components_centred_and_shifted(c, h, k, shift, seed, split):
    x = _correlated(3, c, 6, 8, seed)
    conv = nn.Conv2d(c, h, k, stride=k).double()
    moments = PatchMoments(conv)
    for part in (x[:1], x[1:]) if split else (x,):  # moments gathered in batches equal one pass
        moments.update(part)
    principal_init_(conv, moments, shift)

    patches = _naive_patches(x, k)
    values, vectors = torch.linalg.eigh(torch.cov(patches.T))
    d = patches.shape[1]
    m = min(h, d)
    rows = conv.weight.detach().reshape(h, -1)[:m]
    scale2 = (rows @ rows.T)[0, 0]
    assert torch.allclose(rows @ rows.T, scale2 * torch.eye(m, dtype=torch.float64), atol=1e-9)  # orthogonal, one scale
    top = vectors[:, -m:]  # the leading eigenvectors span the same space as the rows
    assert torch.allclose(rows @ top @ top.T, rows, atol=1e-6)
    out = conv(x).detach().permute(1, 0, 2, 3).reshape(h, -1)[:m]
    lead = values.flip(0)[:m].clamp_min(0)
    assert torch.allclose(out.var(1), scale2 * lead, atol=1e-7)  # each the variance of its component, scaled
    # the scale: outputs' mean variance = the second moment a fan-in uniform init passes, (tr Σ + |μ|²) / 3D
    mu = patches.mean(0)
    if lead.mean() > 1e-9:
        want = (torch.cov(patches.T).trace() + mu @ mu) / (3 * d)
        assert torch.allclose(out.var(1).mean(), want, rtol=1e-6)
    assert torch.allclose(out.mean(1), shift * out.std(1), atol=1e-6)  # centred, raised by `shift` std


def test_patch_moments_refuse_convs_and_inputs_they_cannot_describe():
    with pytest.raises(ValueError, match="padding"):
        PatchMoments(nn.Conv2d(4, 2, 3, padding=1))
    with pytest.raises(ValueError, match="ungrouped"):
        PatchMoments(nn.Conv2d(4, 2, 1, groups=2))
    moments = PatchMoments(nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match="patches of 3 values"):
        moments.update(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 2 patches"):
        principal_init_(nn.Conv2d(4, 2, 1), moments, 2.0)


_CONV = {"encoder": "reduce_enc", "decoder": "reduce_dec"}


@pytest.mark.parametrize("resolution", ["half", "full"])
@pytest.mark.parametrize("enc_hw, dec_hw", [((8, 8), (8, 8)), ((4, 6), (8, 12)), ((10, 14), (5, 7))])
@pytest.mark.parametrize("reductions", [None, "encoder", ("encoder", "decoder")])
def test_init_reductions_sets_the_named_reductions_and_keeps_an_untrained_block_predicting_the_reference(
    resolution, enc_hw, dec_hw, reductions
):
    torch.manual_seed(0)
    block = make_block(resolution, 12, 10, width=4)
    taps = [KeyframeTaps(torch.randn(2, 12, *enc_hw) + 1, torch.rand(2, 10, *dec_hw)) for _ in range(2)]
    before = {k: v.clone() for k, v in block.state_dict().items()}
    a = torch.randn(1, 12, *enc_hw)
    ref = block.prepare_reference(taps[0].enc[:1], taps[0].dec[:1])
    assert block.untrained
    block.init_reductions(iter(taps), **({} if reductions is None else {"reductions": reductions}))
    names = START_REDUCTIONS if reductions is None else (reductions,) if isinstance(reductions, str) else reductions
    assert START_REDUCTIONS == ("decoder",)  # the default: the decoder tap's reduction alone
    changed = {k for k, v in block.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{_CONV[n]}.{p}" for n in names for p in ("weight", "bias")}
    assert block.untrained  # still predicts the warped reference: the flow head's last conv is zero
    out = block(a, block.prepare_reference(taps[0].enc[:1], taps[0].dec[:1])).feature
    assert torch.equal(out, block(a, ref).feature) and torch.allclose(out, taps[0].dec[:1])
    # what the reductions set produce is mostly above zero: ReLU passes it
    inputs = dict(zip(("encoder", "decoder"), block.reduction_inputs(taps[0].enc, taps[0].dec)))
    for n in names:
        reduced = getattr(block, _CONV[n])(inputs[n])
        assert (reduced > 0).float().mean() > 0.9


def test_init_reductions_reports_empty_or_mismatched_taps_and_unknown_reductions():
    block = make_block("full", 8, 6, width=4)
    with pytest.raises(ValueError, match="at least one keyframe"):
        block.init_reductions([])
    with pytest.raises(ValueError, match="taps of 5 and 6 channels; this block reads 8"):
        block.init_reductions([KeyframeTaps(torch.randn(1, 5, 4, 4), torch.randn(1, 6, 4, 4))])
    taps = [KeyframeTaps(torch.randn(1, 8, 4, 4), torch.randn(1, 6, 4, 4))]
    before = {k: v.clone() for k, v in block.state_dict().items()}
    for bad in ("reduce_dec", ("decoder", "flow"), ()):
        with pytest.raises(ValueError, match=r"reductions must name one or more of \('encoder', 'decoder'\)"):
            block.init_reductions(taps, reductions=bad)
    assert all(torch.equal(v, before[k]) for k, v in block.state_dict().items())


def _sv():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    return shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=3)


def _reductions(sv):
    return {k: v.clone() for k, v in sv.block.state_dict().items() if k.startswith("reduce_")}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_distill_starts_an_untrained_block_from_the_data_and_keeps_a_trained_ones_reductions():
    clips = moving_clips(n=2, frames=4, size=16)
    sv = _sv()
    built = _reductions(sv)
    seen = []

    def first_step(step, logs):
        if step == 1:
            seen.append(_reductions(sv))

    distill(sv, clips, steps=1, batch_size=2, lr=0.0, progress=False, callback=first_step)  # lr 0: only the start moves them
    assert not _same(built, seen[0]) and _same(seen[0], _reductions(sv))
    moved = {k.split(".")[0] for k in built if not torch.equal(built[k], seen[0][k])}
    assert moved == {"reduce_dec"}  # the decoder tap's reduction (START_REDUCTIONS); the encoder tap's as built
    sv2 = _sv()  # same data, same seed: the same start
    distill(sv2, clips, steps=1, batch_size=2, lr=0.0, progress=False)
    assert _same(_reductions(sv), _reductions(sv2))

    sv3 = _sv()
    distill(sv3, clips, steps=1, batch_size=2, lr=0.0, progress=False, data_init=False)
    assert _same(built, _reductions(sv3))

    trained = _sv()
    distill(trained, clips, steps=3, batch_size=2, progress=False, data_init=False)
    assert not trained.block.untrained
    kept = _reductions(trained)
    distill(trained, clips, steps=1, batch_size=2, lr=0.0, progress=False)  # "auto": fine-tuning keeps them
    assert _same(kept, _reductions(trained))
    distill(trained, clips, steps=1, batch_size=2, lr=0.0, progress=False, data_init=True)  # asked for: set
    assert not _same(kept, _reductions(trained))


def test_distill_rejects_a_bad_data_init():
    with pytest.raises(ValueError, match="data_init must be True, False or 'auto'"):
        distill(_sv(), moving_clips(n=1, frames=3, size=16), steps=1, progress=False, data_init="yes")


def test_a_checkpoint_records_the_start_and_resume_names_a_difference(tmp_path):
    from shortcutify.errors import IncompatibleCheckpointError

    clips = moving_clips(n=2, frames=4, size=16)
    run = dict(steps=2, batch_size=2, checkpoint_every=1, progress=False)
    distill(_sv(), clips, checkpoint_dir=tmp_path, data_init=False, **run)  # as 0.13 and earlier ran
    with pytest.raises(IncompatibleCheckpointError, match="data_init"):
        distill(_sv(), clips, checkpoint_dir=tmp_path, resume=True, **run)
    resumed = _sv()
    distill(resumed, clips, checkpoint_dir=tmp_path, resume=True, data_init=False, **run)
    assert not resumed.block.untrained  # the checkpoint's block was loaded

    started = tmp_path / "started"
    sv = _sv()
    distill(sv, clips, checkpoint_dir=started, **run)  # "auto": started from the data
    distill(sv, clips, checkpoint_dir=started, resume=True, **run)  # the same module, now trained: accepted
    distill(_sv(), clips, checkpoint_dir=started, resume=True, **run)  # a fresh one: accepted
    with pytest.raises(IncompatibleCheckpointError, match="data_init"):
        distill(_sv(), clips, checkpoint_dir=started, resume=True, data_init=False, **run)
