"""Specification: a user's mistakes are refused or warned about, with what to do, and change nothing.

Each case here was found by probing the library as a new user would (0.21).
"""

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generators import FourConvs, moving_clips
from shortcutify import (
    AdaptiveKeyframes,
    FixedInterval,
    InputMismatchError,
    LossWeights,
    TapShapeError,
    UntraceableModelError,
    calibrate,
    distill,
    evaluate,
    list_taps,
    load,
    shortcutify,
)
from shortcutify.demo.models import ResnetGenerator


def _sv(policy=None, batch=1, seed=0):
    torch.manual_seed(seed)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.randn(batch, 3, 16, 16), policy=policy)
    with torch.no_grad():
        for p in sv.block.parameters():
            p.copy_(0.05 * torch.randn(p.shape))
    return gen, sv


def _frames(n, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(n)]


def _block_state(sv):
    return {k: v.clone() for k, v in sv.block.state_dict().items()}


def _unchanged(sv, before):
    return all(torch.equal(v, sv.block.state_dict()[k]) for k, v in before.items())


# ------------------------------------------------------------------ streams and state
def test_a_policy_that_starts_using_the_change_takes_a_keyframe_first():
    """The change since the keyframe is kept up to date only while the policy uses it: switching from an
    adaptive policy to a fixed one and back must not measure the change against stale taps."""
    _, sv = _sv(policy=AdaptiveKeyframes(100.0, max_interval=50), batch=2)
    frames = _frames(8, batch=2)
    with torch.no_grad():
        for x in frames[:3]:
            sv(x)
        sv.policy = FixedInterval(6)
        sv.reset(streams=[1])
        sv(frames[3])
        sv.policy = AdaptiveKeyframes(100.0, max_interval=50)
        sv(frames[4])
        assert sv.last_keyframes.tolist() == [True, True]
        sv(frames[5])
        assert sv.last_keyframes.tolist() == [False, False]
        sv.policy = AdaptiveKeyframes(200.0, max_interval=50)  # adaptive to adaptive: the change carries on
        sv(frames[6])
        assert sv.last_keyframes.tolist() == [False, False]


def test_writing_into_an_output_that_is_the_encoder_tap_leaves_the_policy_alone():
    class ReturnsItsFeature(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Conv2d(3, 8, 3, padding=1)
            self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
            self.out = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            e = F.relu(self.enc(x))
            return self.out(self.mid(e)), e

    torch.manual_seed(0)
    gen = ReturnsItsFeature()
    policy = AdaptiveKeyframes(0.8, max_interval=6)
    mutated, clean = (shortcutify(gen, "enc", "mid", torch.randn(1, 3, 16, 16), policy=policy) for _ in range(2))
    keys = {id(mutated): [], id(clean): []}
    frames = [x * 0.2 + f for x, f in zip(_frames(6, seed=2), [_frames(1, seed=3)[0]] * 6)]
    with torch.no_grad():
        for x in frames:
            for sv in (mutated, clean):
                _, e = sv(x)
                keys[id(sv)].append(bool(sv.last_was_keyframe))
                if sv is mutated:
                    e.mul_(0)  # the caller's own output
    assert keys[id(mutated)] == keys[id(clean)]


def test_a_move_to_where_the_module_already_is_keeps_its_streams():
    _, sv = _sv(policy=FixedInterval(3))
    x = _frames(1)[0]
    with torch.no_grad():
        sv(x)
        for same in (lambda: sv.to("cpu"), lambda: sv.float(), lambda: sv.to(torch.float32)):
            same()
            sv(x)
            assert not sv.last_was_keyframe
            sv.reset()
            sv(x)
        sv.double()
        sv(x.double())
        assert sv.last_was_keyframe


def test_a_refused_state_dict_keeps_the_streams_and_says_when_keys_lack_the_block_prefix():
    _, sv = _sv(policy=FixedInterval(4))
    x = _frames(1)[0]
    with torch.no_grad():
        sv(x)
    reference = sv.reference
    bad = {k: torch.zeros(1) for k in sv.state_dict()}
    with pytest.raises(RuntimeError):
        sv.load_state_dict(bad)
    with pytest.raises(RuntimeError, match=r"lack the module's 'block\.' prefix.*sv\.block\.load_state_dict"):
        sv.load_state_dict(sv.block.state_dict())
    assert sv.reference is reference
    with torch.no_grad():
        sv(x)
    assert not sv.last_was_keyframe
    sv.load_state_dict(sv.state_dict())  # new weights (the same here) end the streams
    assert sv.reference is None


# ------------------------------------------------------------------ distill
def test_distill_refuses_a_frozen_block_and_leaves_it_as_it_was():
    _, sv = _sv()
    sv.requires_grad_(False)
    before = _block_state(sv)
    with pytest.raises(ValueError, match=r"no trainable parameter.*sv\.block\.requires_grad_\(True\)"):
        distill(sv, moving_clips(2), steps=2, progress=False)
    assert _unchanged(sv, before)


def test_a_failure_after_the_data_dependent_start_leaves_the_block_as_it_was(monkeypatch):
    _, sv = _sv()
    before = _block_state(sv)

    def fails(*args, **kwargs):
        raise RuntimeError("the optimiser could not be made")

    monkeypatch.setattr(torch.optim, "Adam", fails)
    with pytest.raises(RuntimeError, match="could not be made"):
        distill(sv, moving_clips(2), steps=2, data_init=True, progress=False)
    assert _unchanged(sv, before)


def test_a_block_saved_during_distillation_records_the_interval_it_is_trained_for(tmp_path):
    """A snapshot from the callback (after a step) knows its trained gaps, as the final block does."""
    gen, sv = _sv(policy=FixedInterval(3))
    seen = []

    def snapshot(step, logs):
        seen.append(sv.distilled_interval)
        if step == 1:
            sv.save(tmp_path / "snap")

    distill(sv, moving_clips(2), steps=2, batch_size=2, callback=snapshot, progress=False)
    assert seen == [3, 3]
    with pytest.warns(UserWarning, match="distilled with interval 3"):
        load(gen, tmp_path / "snap", policy=FixedInterval(6))


def test_clips_shorter_than_the_interval_warn_and_record_the_gaps_they_trained():
    _, sv = _sv(policy=FixedInterval(8))
    with pytest.warns(UserWarning, match=r"longest clip has 4 frames.*at most 3 frames apart.*up to 7"):
        distill(sv, moving_clips(2, frames=4), steps=1, batch_size=2, progress=False)
    assert sv.distilled_interval == 4
    with pytest.warns(UserWarning, match="distilled with interval 4"):
        sv.policy = FixedInterval(8)


def test_a_run_that_does_not_resume_says_it_replaces_the_checkpoint_there(tmp_path):
    _, sv = _sv()
    distill(sv, moving_clips(2), steps=1, batch_size=2, checkpoint_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match=r"checkpoint of an earlier run.*resume=True to continue"):
        distill(sv, moving_clips(2), steps=1, batch_size=2, checkpoint_dir=tmp_path, progress=False)


def test_a_perceptual_weight_without_its_loss_or_a_loss_that_is_not_one_is_refused():
    _, sv = _sv()
    before = _block_state(sv)
    with pytest.raises(ValueError, match=r"perceptual term 10, but no perceptual= loss"):
        distill(sv, moving_clips(2), steps=1, weights={"feature": 0, "output": 0, "perceptual": 10}, progress=False)
    with pytest.raises(ValueError, match=r"perceptual term 5, but no perceptual= loss"):
        distill(sv, moving_clips(2), steps=1, weights=LossWeights(perceptual=5), progress=False)
    with pytest.raises(TypeError, match="perceptual must be a callable"):
        distill(sv, moving_clips(2), steps=1, perceptual=3, progress=False)
    with pytest.raises(ValueError, match=r"must return a scalar tensor.*\.mean\(\)"):
        distill(sv, moving_clips(2), steps=1, batch_size=2, perceptual=lambda a, b: (a - b).abs(), data_init=False, progress=False)
    assert _unchanged(sv, before)
    distill(sv, moving_clips(2), steps=1, batch_size=2, perceptual=lambda a, b: (a - b).abs().mean(), progress=False)


def test_numbers_of_numpy_types_are_numbers():
    assert AdaptiveKeyframes(np.float32(0.5), expected_interval=np.float32(2.0)).threshold == 0.5
    assert LossWeights.coerce({"feature": np.float32(2.0)}).feature == 2.0
    _, sv = _sv()
    cal = calibrate(sv, moving_clips(1, frames=8), keyframe_rate=np.float32(0.5), apply=False, progress=False)
    assert 0 < cal.keyframe_rate <= 1


# ------------------------------------------------------------------ policies
@pytest.mark.parametrize("interval", [2.5, "3", None, -1, 0, True])
def test_a_policy_whose_interval_is_not_a_count_is_refused(interval):
    class Every:
        def __init__(self):
            self.interval = interval

        def select(self, signal):
            return signal.since_keyframe >= 2

    _, sv = _sv()
    with pytest.raises(ValueError, match=r"Every\.interval must be an integer >= 1"):
        sv.policy = Every()


@pytest.mark.parametrize("config, message", [({"n": 3}, 'a dict with a "type"'), ({"type": "Mine", "t": torch.ones(1)}, "JSON cannot hold")])
def test_a_policy_whose_description_cannot_be_saved_is_named_at_save(tmp_path, config, message):
    class Mine(FixedInterval):
        def to_config(self):
            return config

    _, sv = _sv(policy=Mine(3))
    with pytest.raises(TypeError, match=f"Mine.to_config\\(\\) .*{message}"):
        sv.save(tmp_path)


def test_a_block_saved_with_a_policy_of_ones_own_loads_with_its_interval_or_the_policy_given(tmp_path):
    class EveryFourth(FixedInterval):
        def to_config(self):
            return {"type": "EveryFourth", "n": 4}

    gen, sv = _sv(policy=EveryFourth(4))
    sv.save(tmp_path)
    with pytest.warns(UserWarning, match=r"'EveryFourth' keyframe policy .* running FixedInterval\(4\).*Pass policy="):
        loaded = load(gen, tmp_path)
    assert type(loaded.policy) is FixedInterval and loaded.policy.interval == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(load(gen, tmp_path, policy=EveryFourth(4)).policy) is EveryFourth


def test_a_tensor_in_the_place_of_a_tap_name_says_where_the_frames_go():
    gen, _ = _sv()
    with pytest.raises(TypeError, match=r"got a Tensor where a tap name goes.*example_inputs=frame"):
        shortcutify(gen, torch.zeros(1, 3, 16, 16))


# ------------------------------------------------------------------ arguments of the wrong kind
def test_arguments_of_the_wrong_kind_are_named(tmp_path):
    gen, sv = _sv()
    clip = moving_clips(1)[0]
    cases = [
        (lambda: distill(sv, moving_clips(2), steps=1, val_clips=clip, progress=False), TypeError, r"val_clips must be a collection.*\[clip\]"),
        (lambda: calibrate(sv, clip, keyframe_rate=0.5, progress=False), TypeError, r"clips must be a collection.*\[clip\]"),
        (lambda: distill(sv, None, steps=1, progress=False), TypeError, r"clips must be a collection of clips.*got NoneType"),
        (lambda: evaluate(sv, None), TypeError, r"clips must be a collection of clips.*got NoneType"),
        (lambda: evaluate(gen, [clip]), TypeError, r"evaluate\(\) takes a ShortcutV2V.*got ResnetGenerator"),
        (lambda: calibrate(gen, [clip], keyframe_rate=0.5), TypeError, r"calibrate\(\) takes a ShortcutV2V"),
        (lambda: list_taps(None, clip[:1]), TypeError, "model must be a torch.nn.Module, got NoneType"),
        (lambda: sv.cost(torch.randn(3, 16, 16)), InputMismatchError, r"example input 0 has shape \[3, 16, 16\]"),
        (lambda: sv.run_shortcut(clip[:1], reference=None), TypeError, r"reference is None.*sv\.prepare_reference"),
        (lambda: sv.compile(backend="no-such-backend"), ValueError, r"unknown torch\.compile backend 'no-such-backend'"),
        (lambda: load(gen, tmp_path / "blk", map_location=3.5), TypeError, "map_location must be a device"),
        (lambda: load(gen, tmp_path / "blk", map_location="meta"), ValueError, "meta tensors hold no values"),
    ]
    sv.save(tmp_path / "blk")
    (tmp_path / "a-file").write_text("")
    cases.append((lambda: sv.save(tmp_path / "a-file"), FileExistsError, "is a file; a saved block is a directory"))
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert sv.compile_options is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(gen, tmp_path / "blk", map_location="cpu")


# ------------------------------------------------------------------ what the checks must not refuse (0.21 review)
def test_channels_last_frames_and_empty_side_inputs_are_not_mistaken_for_frames():
    class ChannelsLast(FourConvs):
        def forward(self, x, boxes):  # x: [B, H, W, 3]; boxes: [N, 4], possibly none
            return self.d(self.c(self.b(self.a(x.permute(0, 3, 1, 2))))) + boxes.sum()

    gen = ChannelsLast()
    sv = shortcutify(gen, "a", "c", (torch.randn(1, 16, 16, 3), torch.zeros(0, 4)))
    x = torch.randn(1, 24, 24, 3)
    with torch.no_grad():
        assert torch.equal(sv(x, torch.zeros(0, 4)), gen(x, torch.zeros(0, 4)))


def test_a_policy_interval_of_a_numpy_integer_is_saved(tmp_path):
    class Every(FixedInterval):
        @property
        def interval(self):
            return np.int64(3)

    gen, sv = _sv(policy=Every(3))
    sv.save(tmp_path)
    assert load(gen, tmp_path, policy=FixedInterval(3)).policy.interval == 3


def test_the_interval_warning_names_the_callers_line_and_load_gives_it_for_the_saved_policy_too(tmp_path):
    gen, sv = _sv(policy=FixedInterval(3))
    sv.distilled_interval = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sv.policy = FixedInterval(4)
    sv.save(tmp_path)
    for call in (lambda: load(gen, tmp_path), lambda: load(gen, tmp_path, policy=FixedInterval(5))):
        with pytest.warns(UserWarning, match="distilled with interval 3") as caught:
            call()
        assert [w.filename for w in caught if "distilled with interval" in str(w.message)] == [__file__]


def test_evaluate_and_calibrate_take_a_compiled_module():
    _, sv = _sv()
    clips = moving_clips(1, frames=6)
    compiled = torch.compile(sv)
    assert evaluate(compiled, clips).summary()["shortcut_frames"] > 0
    sv.policy = AdaptiveKeyframes()
    assert 0 < calibrate(compiled, clips, keyframe_rate=0.5, apply=False, progress=False).keyframe_rate <= 1


# ------------------------------------------------------------------ the outputs' value range
class _Sigmoid(nn.Module):
    """Outputs in [0, 1], or in [0, 255] with ``scale=255``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.inner, self.scale = ResnetGenerator(ngf=8, n_blocks=2), scale

    def forward(self, x):
        return self.scale * torch.sigmoid(3 * self.inner(x))


@pytest.mark.parametrize("scale, message", [(1.0, r"within \[0, 1\].*pass data_range=1\.0"), (255.0, r"wider than .*255 for 8-bit.*spread seen here, data_range=2\d\d")])
def test_metrics_over_the_default_range_warn_when_the_outputs_do_not_look_like_it(scale, message):
    torch.manual_seed(0)
    gen = _Sigmoid(scale)
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", torch.randn(1, 3, 16, 16))
    clips = moving_clips(1, frames=4)
    with pytest.warns(UserWarning, match=r"evaluate\(\): the teacher's outputs on these clips lie in \[.*" + message) as caught:
        evaluate(sv, clips)
    assert caught[0].filename == __file__  # at the caller's line
    with pytest.warns(UserWarning, match=r"calibrate\(\): the teacher's outputs"):
        calibrate(sv, clips, min_psnr=-100.0, apply=False, progress=False)
    with warnings.catch_warnings(record=True) as caught:  # validated at steps 0, 1 and 2: the range is judged once
        warnings.simplefilter("always")
        distill(sv, moving_clips(2), steps=2, val_every=1, batch_size=2, val_clips=clips, progress=False)
    assert len([w for w in caught if re.match(r"distill\(val_clips=\): the teacher's outputs", str(w.message))]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(sv, clips, data_range=scale)  # the range given: no guess
        calibrate(sv, clips, keyframe_rate=0.5, apply=False, progress=False)  # (no PSNR measured)


def test_outputs_spanning_minus_one_to_one_take_the_default_range_silently():
    _, sv = _sv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate(sv, moving_clips(1, frames=4))
    assert result.shortcut_frames == 2


def test_loading_a_distill_checkpoint_names_how_to_save_its_block(tmp_path):
    gen, sv = _sv()
    distill(sv, moving_clips(2), steps=1, batch_size=2, checkpoint_dir=tmp_path / "ckpt", progress=False)
    for given in (tmp_path / "ckpt", tmp_path / "ckpt" / "checkpoint.pt"):
        with pytest.raises(FileNotFoundError, match=r"holds a distill\(\) checkpoint.*sv\.block\.load_state_dict\(torch\.load\(") as e:
            load(gen, given)
    fresh = shortcutify(gen, "model.4", "model.12", torch.randn(1, 3, 16, 16))
    fresh.block.load_state_dict(torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=True)["block"])  # as the message says
    assert "sv.save(path)" in str(e.value)
    assert all(torch.equal(a, b) for a, b in zip(fresh.block.state_dict().values(), sv.block.state_dict().values()))


class _Fourier(nn.Module):
    """A LaMa-style Fourier unit between convs: complex values inside."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 16, 1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        f = torch.fft.rfft2(h, norm="ortho")
        g = self.b(torch.cat([f.real, f.imag], 1))
        y = torch.fft.irfft2(torch.complex(g[:, :8], g[:, 8:]), s=h.shape[-2:], norm="ortho")
        return self.d(h + y)


def test_a_complex_tap_is_refused_naming_why():
    torch.manual_seed(0)
    gen, x = _Fourier(), torch.randn(1, 3, 16, 16)
    complex_nodes = [t.name for t in list_taps(gen, x) if "complex" in t.name]
    assert complex_nodes
    with pytest.raises(TapShapeError, match=r"is a torch\.complex64 tensor; a tap must be a real floating-point"):
        shortcutify(gen, "a", complex_nodes[0], x)


def test_resuming_where_no_checkpoint_was_written_says_which_block_it_starts_from(tmp_path):
    _, sv = _sv()

    def interrupt(step, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # stopped after its first step, before any checkpoint
        distill(sv, moving_clips(2), steps=4, batch_size=2, checkpoint_dir=tmp_path, checkpoint_every=4, callback=interrupt, progress=False)
    with pytest.warns(UserWarning, match=r"does not exist: starting from step 0, the block's current weights kept"):
        distill(sv, moving_clips(2), steps=1, batch_size=2, checkpoint_dir=tmp_path, resume=True, progress=False)
    fresh = shortcutify(ResnetGenerator(ngf=8, n_blocks=2), "model.4", "model.12", torch.randn(1, 3, 16, 16))  # untrained
    with pytest.warns(UserWarning, match=r"does not exist: starting from step 0, the block started from the data"):
        distill(fresh, moving_clips(2), steps=1, batch_size=2, checkpoint_dir=tmp_path / "other", resume=True, progress=False)


def _convs():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
    )


def test_a_refused_generator_keeps_its_train_modes_and_gradients():
    from shortcutify import UnknownTapError

    gen = _convs().train()
    with pytest.raises(UnknownTapError):
        shortcutify(gen, "no_such_layer", "2", torch.randn(1, 3, 16, 16))
    assert all(m.training for m in gen.modules()) and all(p.requires_grad for p in gen.parameters())
    sv = shortcutify(gen, "0", "2", torch.randn(1, 3, 16, 16))  # accepted: the teacher is frozen, in eval mode
    assert not any(m.training for m in gen.modules()) and not any(p.requires_grad for p in gen.parameters())
    assert sv.teacher is gen


@pytest.mark.parametrize(
    "make, named",
    [
        (lambda: torch.jit.script(_convs()), "TorchScript module"),
        (lambda: nn.Sequential(nn.LazyConv2d(8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)), "run it once"),
        (lambda: _convs().to("meta"), "meta device"),
    ],
)
def test_a_generator_no_capture_can_work_on_is_refused_naming_the_fix(make, named):
    from shortcutify import GeneratorStateError, suggest_taps

    gen, x = make(), torch.randn(1, 3, 16, 16)
    for wrap in (lambda: shortcutify(gen, "0", "2", x), lambda: list_taps(gen, x), lambda: suggest_taps(gen, x)):
        with pytest.raises(GeneratorStateError, match=named):
            wrap()


class _FoldsBatchIntoChannels(nn.Module):
    """A modulated conv whose folded value ``[1, B·C, H, W]`` is what modules return (candidate taps)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.affine = nn.Conv2d(3, 16, 3, 2, 1), nn.Linear(8, 16)
        self.weight = nn.Parameter(torch.randn(16, 16, 3, 3) / 12)
        self.fold, self.body = nn.Identity(), nn.Identity()
        self.out = nn.ConvTranspose2d(16, 3, 4, 2, 1)

    def forward(self, x, style):
        h = F.relu(self.inp(x))
        b, c, hh, ww = h.shape
        weight = (self.weight[None] * (self.affine(style) + 1)[:, None, :, None, None]).reshape(b * 16, c, 3, 3)
        y = self.body(F.relu(F.conv2d(self.fold(h.reshape(1, b * c, hh, ww)), weight, padding=1, groups=b)))
        return torch.tanh(self.out(y.reshape(b, 16, hh, ww)))


def test_taps_that_fold_the_batch_into_channels_are_refused_and_not_suggested():
    from shortcutify import suggest_taps

    torch.manual_seed(0)
    gen, x, style = _FoldsBatchIntoChannels().eval(), torch.randn(4, 3, 32, 32), torch.randn(4, 8)
    with pytest.raises(TapShapeError, match=r"'fold' \(1 rows\).*batch of 4.*would mix the streams"):
        shortcutify(gen, "fold", "body", (x, style))
    sv = shortcutify(gen, "fold", "body", (x[:1], style[:1]))  # a batch of 1 cannot tell
    with pytest.raises(TapShapeError, match="would mix the streams"):
        sv(x, style)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = suggest_taps(gen, (x, style), top=5)
    assert found and all(s.enc.shape[0] == s.dec.shape[0] == 4 for s in found)


def test_an_output_not_batched_by_stream_is_refused_when_streams_split_even_one_and_one():
    from shortcutify import StreamSplitError

    class Summarised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _convs()

        def forward(self, x):
            y = self.net(x)
            return y, y.abs().mean().reshape(1)  # one summary of the whole batch

    gen, x = Summarised().eval(), torch.randn(2, 3, 16, 16)
    sv = shortcutify(gen, "net.0", "net.2", x)
    sv(x)
    sv(x + 0.1)
    sv.reset(streams=[1])  # sub-batches of one stream each: the summary's [1] looks batched in each
    with pytest.raises(StreamSplitError, match=r"output at \[1\]"):
        sv(x + 0.2)


def test_a_shared_input_with_a_first_dimension_of_its_own_is_not_taken_for_a_batch():
    class Palette(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _convs()

        def forward(self, x, palette):
            return self.net(x) + palette.mean(0)[None, :, None, None]

    gen, x, palette = Palette().eval(), torch.randn(1, 3, 16, 16), torch.randn(16, 3)
    sv = shortcutify(gen, "net.0", "net.2", (x, palette))  # (a [16, 3] palette is no batch of 16 frames)
    assert sv(x, palette).shape == x.shape and sv.last_keyframes.tolist() == [True]


@pytest.mark.parametrize("batch", [1, 2])
def test_a_generator_that_couples_its_batch_entries_is_named_at_wrap_time(batch):
    class Centred(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _convs()

        def forward(self, x):
            h = self.net[0](x)
            return self.net[2:](self.net[1](h - h.mean(0, keepdim=True)))  # batch statistics

    x = torch.randn(batch, 3, 16, 16)
    with pytest.warns(UserWarning, match="couples its batch entries"):
        shortcutify(Centred().eval(), "net.0", "net.2", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        shortcutify(_convs().eval(), "0", "2", x)  # independent entries: nothing to say


@pytest.mark.parametrize("batch", [1, 2])
def test_a_generator_that_samples_at_random_is_named_at_wrap_time(batch):
    class Noisy(nn.Module):  # SPADE-like: noise drawn in forward when none is given
        def __init__(self) -> None:
            super().__init__()
            self.net = _convs()

        def forward(self, x, z=None):
            z = torch.randn(x.shape[0], 3, 1, 1) if z is None else z
            return self.net(x + z)

    x = torch.randn(batch, 3, 16, 16)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        shortcutify(Noisy().eval(), "net.0", "net.2", x)
    said = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    assert any("between two runs on the same inputs: it samples at random in forward()" in m for m in said), said
    assert not any("couples its batch entries" in m for m in said)  # (one cause named, not a second)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        shortcutify(Noisy().eval(), "net.0", "net.2", (x, torch.zeros(batch, 3, 1, 1)))  # the noise given: nothing to say


def test_a_channels_last_tap_is_refused_naming_the_layers_to_tap_instead():
    class ConvNeXtLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.norm = nn.Conv2d(3, 16, 3, padding=1), nn.LayerNorm(16)
            self.body, self.out = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 3, 1)

        def forward(self, x):
            h = self.norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B, H, W, C] inside
            return self.out(self.body(h))

    gen, x = ConvNeXtLike().eval(), torch.randn(1, 3, 32, 48)
    with pytest.raises(TapShapeError, match=r"'norm' has shape \(1, 32, 48, 16\), which looks channels-last"):
        shortcutify(gen, "norm", "body", x)
    assert shortcutify(gen, "stem", "body", x).enc.shape == (1, 16, 32, 48)


def test_a_tap_far_from_the_frames_aspect_is_warned_of_as_no_feature_map():
    class ChannelAttention(nn.Module):  # Restormer's "transposed" attention: [B, heads, C / heads, H·W] inside
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.qkv, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 24, 1), nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            h = self.stem(x)
            b, c, hh, ww = h.shape
            q, k, v = (t.reshape(b, 2, c // 2, hh * ww) for t in self.qkv(h).chunk(3, dim=1))
            attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
            return self.out((attn @ v).reshape(b, c, hh, ww) + h)

    gen, x = ChannelAttention().eval(), torch.randn(1, 3, 16, 16)
    attended = [t.name for t in list_taps(gen, x) if t.shape == (1, 2, 4, 256)][-1]  # attention @ values
    with pytest.warns(UserWarning, match=rf"the tap '{attended}' has shape \(1, 2, 4, 256\).*does not look like a feature map"):
        shortcutify(gen, "stem", attended, x)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        shortcutify(gen, "stem", "add", x)  # a feature map of the frame
    assert not any("feature map" in str(w.message) for w in seen)


def test_evaluate_says_when_the_compared_image_is_one_the_shortcut_computes_exactly():
    class TwoStages(nn.Module):  # as HINet / MPRNet: an early stage's image, then the final one
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = _convs(), _convs()

        def forward(self, x):
            early = self.first(x)
            return [early, self.second(early)]

    torch.manual_seed(0)
    gen = TwoStages().eval()
    sv = shortcutify(gen, "second.0", "second.2", torch.randn(1, 3, 16, 16))
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    with pytest.warns(UserWarning, match="equals the teacher's exactly on every shortcut frame"):
        evaluate(sv, moving_clips(1, frames=4), data_range=2.0)


def test_a_3d_tap_is_blamed_on_a_missing_batch_dimension_only_when_the_example_lacks_one():
    class Tokens(nn.Module):  # tokens [B, L, C] between two convs, as a window-attention block holds them
        def __init__(self) -> None:
            super().__init__()
            self.net = _convs()
            self.mix = nn.Linear(8, 8)

        def forward(self, x):
            h = self.net[1](self.net[0](x))
            t = self.mix(h.flatten(-2).transpose(-1, -2))
            return self.net[4](self.net[3](self.net[2](t.transpose(-1, -2).reshape(h.shape))))

    gen = Tokens().eval()
    with pytest.raises(TapShapeError) as batched:
        shortcutify(gen, "net.0", "mix", torch.randn(1, 3, 16, 16))
    assert "has shape (1, 256, 8)" in str(batched.value) and "unsqueeze" not in str(batched.value)
    with pytest.raises(TapShapeError, match=r"x\.unsqueeze\(0\)"):
        shortcutify(gen, "net.0", "net.2", torch.randn(3, 16, 16))  # one frame without its batch dimension


class _ZeroState(nn.Module):
    """A recurrent generator's first step: its state starts as zeros shaped like the frame (``x.new_zeros``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.s = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.c = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        state = torch.relu(self.s(x.new_zeros(x.shape[0], 8, x.shape[2], x.shape[3])))
        return self.c(self.b(torch.cat([torch.relu(self.a(x)), state], 1)))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_an_encoder_tap_that_does_not_depend_on_the_frames_is_refused(capture):
    from shortcutify import TapOrderError

    gen, x = _ZeroState().eval(), torch.rand(1, 3, 16, 16)
    with pytest.raises(TapOrderError, match="enc_layer 's' does not depend on the frames"):
        shortcutify(gen, "s", "b", x, capture=capture)
    sv = shortcutify(gen, "a", "b", x, capture=capture)  # the frame's own branch: fine
    for p in sv.block.parameters():  # (a block that changes the frame: the untrained one repeats the keyframe's)
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        sv(x)
        assert not torch.equal(sv(torch.rand(1, 3, 16, 16)), sv(-torch.rand(1, 3, 16, 16)))


def test_an_encoder_tap_on_what_the_generator_returns_is_named_as_such_not_as_swapped_taps():
    from shortcutify import TapOrderError
    from shortcutify.demo.models import ResnetGenerator

    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    with pytest.raises(TapOrderError, match="enc_layer 'model' .* is what the generator returns") as e:
        shortcutify(gen, "model", "model.12", torch.rand(1, 3, 16, 16))  # the Sequential that runs it all
    assert "swap" not in str(e.value)


def test_an_unused_in_place_activation_as_encoder_tap_is_not_called_the_generators_output():
    from shortcutify import TapOrderError

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.act = _convs(), nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.net[0](x)
            self.act(h)  # in place; its result unused
            return self.net[4](self.net[3](self.net[2](h)))

    with pytest.raises(TapOrderError) as e:
        shortcutify(Unused().eval(), "act", "net.2", torch.randn(1, 3, 16, 16), capture="fx")
    assert "is what the generator returns" not in str(e.value)


@pytest.mark.parametrize("keyword", [{"output": 0}, {"top": 3}, {"progress": False}, {"colour": "red"}])
def test_unknown_keywords_are_refused_before_taps_are_ranked_naming_suggest_taps_options(keyword, monkeypatch):
    import shortcutify.core.build as build

    def never(*args, **kwargs):
        raise AssertionError("suggest_taps ran before the keywords were checked")

    monkeypatch.setattr(build, "suggest_taps", never)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    with pytest.raises(TypeError, match=rf"unknown keyword argument\(s\) \['{next(iter(keyword))}'\]") as err:
        shortcutify(gen, example_inputs=torch.zeros(1, 3, 16, 16), **keyword)
    assert ("suggest_taps()' options" in str(err.value)) == ("colour" not in keyword)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.mha = nn.Conv2d(3, 8, 3, padding=1), nn.MultiheadAttention(8, 2, batch_first=True)
        self.b, self.c = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        f = self.a(x)
        t = f.flatten(2).transpose(1, 2)
        att, _ = self.mha(t, t, t)
        return self.c(self.b(f + att.transpose(1, 2).reshape(f.shape)))


def test_a_tap_on_a_module_returning_a_tuple_names_the_tensors_it_returns():
    with pytest.raises(TapShapeError, match=r"'mha'.*not a tensor.*returns a tuple.*tap one of its tensors, the nodes \['getitem\w* \(1, 64, 8\)'"):
        shortcutify(_Attention().eval(), "a", "mha", torch.rand(1, 3, 8, 8), capture="fx")


class _Windows(nn.Module):
    """Window partition into the batch: ``[B, C, H, W] -> [4·B, C, H/2, W/2]`` and back (window attention's layout)."""

    def __init__(self):
        super().__init__()
        self.a, self.win, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        f = self.a(x)
        b, c, h, w = f.shape
        parts = f.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(b * 4, c, h // 2, w // 2)
        parts = self.win(parts)
        f = parts.reshape(b, 2, 2, c, h // 2, w // 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return self.c(self.b(f))


def test_a_tap_with_windows_folded_into_the_batch_is_named_as_such():
    with pytest.raises(TapShapeError, match=r"'win' has 8 row\(s\), 4 rows per frame: the generator folds windows"):
        shortcutify(_Windows().eval(), "a", "win", torch.rand(2, 3, 8, 8))


class _Unshuffles(nn.Module):
    """Frames of sides divisible by 4 only (pixel_unshuffle by 4), captured by fx (one graph for every size)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(48, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 48, 3, padding=1)

    def forward(self, x):
        return F.pixel_shuffle(self.c(torch.relu(self.b(torch.relu(self.a(F.pixel_unshuffle(x, 4)))))), 4)


def test_frames_of_a_size_the_generator_cannot_run_are_named_on_every_path_and_in_distill_as_the_crop():
    from shortcutify import InputMismatchError, distill

    gen = _Unshuffles().eval()
    sv = shortcutify(gen, "a", "b", torch.rand(1, 3, 16, 16), capture="fx")
    with pytest.raises(InputMismatchError, match=r"generator itself fails on inputs of shape \[\(1, 3, 14, 14\)\]"):
        sv(torch.rand(1, 3, 14, 14))
    with pytest.raises(InputMismatchError, match=r"generator itself fails"):
        sv.run_keyframe(torch.rand(1, 3, 14, 14))
    before = {k: v.clone() for k, v in sv.block.state_dict().items()}
    with pytest.raises(InputMismatchError, match=r"crop=\(14, 14\) gives frames of a size the generator cannot run"):
        distill(sv, moving_clips(2), steps=2, crop=14, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in sv.block.state_dict().items())
    distill(sv, moving_clips(2), steps=1, crop=12, progress=False)  # a size it takes


class _InstanceNormed(nn.Module):
    """Down-sampling to 1x1 on small frames, where InstanceNorm raises a ValueError (not a RuntimeError)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.n, self.c = nn.InstanceNorm2d(8), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return F.interpolate(self.c(torch.relu(self.n(self.b(torch.relu(self.a(x)))))), size=x.shape[-2:])


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_frame_size_the_generator_refuses_with_a_value_error_is_named_too(capture):
    from shortcutify import InputMismatchError

    sv = shortcutify(_InstanceNormed().eval(), "a", "b", torch.rand(1, 3, 16, 16), capture=capture)
    with pytest.raises(InputMismatchError, match=r"generator itself fails on inputs of shape \[\(1, 3, 4, 4\)\] \(ValueError"):
        sv(torch.rand(1, 3, 4, 4))
    with pytest.raises(InputMismatchError, match=r"\(ValueError"):
        sv.run_keyframe(torch.rand(1, 3, 4, 4))


class _ReturnsHidden(nn.Module):
    """Returns a hidden state computed between the taps beside the image (transformers' output_hidden_states)."""

    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden
        self.a, self.b, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        h1 = torch.relu(self.a(x))
        h2 = torch.relu(self.b(h1))
        h3 = torch.relu(self.c(h2))
        return (self.d(h3), h2) if self.hidden else self.d(h3)


def test_layers_between_the_taps_kept_for_side_outputs_are_named_when_they_outweigh_the_saving():
    with pytest.warns(UserWarning, match=r"still run .* MACs of the layers between enc_layer 'a' and dec_layer 'c' \(\['b'\]\), more than .* side outputs"):
        sv = shortcutify(_ReturnsHidden(True).eval(), "a", "c", torch.rand(1, 3, 16, 16))
    assert sv.cost().shortcut.macs > 0.5 * sv.cost().teacher.macs  # (the warning's reason)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shortcutify(_ReturnsHidden(False).eval(), "a", "c", torch.rand(1, 3, 16, 16))


class _Cholesky(nn.Module):
    """A value-dependent failure (a singular matrix on a flat frame): the generator's own, not a frame size."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Conv2d(i, o, 3, padding=1) for i, o in ((3, 8), (8, 8), (8, 8), (8, 3)))

    def forward(self, x):
        h = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        m = x.mean((2, 3))[:, :, None] * x.mean((2, 3))[:, None, :] + torch.eye(3) * x.std()
        return self.d(h) + torch.linalg.cholesky(m).sum()


def test_a_failure_of_the_generator_on_frames_of_the_wrapped_size_passes_as_it_is():
    sv = shortcutify(_Cholesky().eval(), "a", "c", torch.rand(1, 3, 16, 16) + 1)
    for call in (sv, sv.run_keyframe):
        with pytest.raises(torch.linalg.LinAlgError):
            call(torch.zeros(1, 3, 16, 16))


def test_run_keyframe_names_a_generator_cast_outside_the_module():
    from shortcutify import PlacementError

    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16))
    gen.double()
    with pytest.raises(PlacementError, match="moved or cast outside this module"):
        sv.run_keyframe(torch.zeros(1, 3, 16, 16))


class _LayoutBranch(nn.Module):
    """An op whose result depends on its input's memory layout (a fast path taken for contiguous tensors)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Conv2d(i, o, 3, padding=1) for i, o in ((1, 8), (8, 8), (8, 8), (8, 1)))

    def forward(self, x):
        h = self.a(x)
        h = h + (h * 2 if h.is_contiguous() else h * 3).mean((2, 3), keepdim=True)
        return self.d(self.c(torch.relu(self.b(h))))


def test_a_one_channel_frame_in_another_memory_layout_gets_its_own_program():
    """Only the batch dimension's stride of a batch of one is ignored in a program's key: a one-channel frame
    viewed out of channels-last video makes convolutions return channels-last values, so it is captured again."""
    torch.manual_seed(0)
    gen = _LayoutBranch().eval()
    sv = shortcutify(gen, "a", "c", torch.randn(1, 1, 16, 16), capture="export")
    frame = torch.randn(4, 16, 16, 1).permute(0, 3, 1, 2)[:1]
    assert torch.allclose(sv.run_keyframe(frame).output, gen(frame), atol=1e-6)


def test_a_dict_subclass_output_whose_keys_are_not_keywords_is_refused_by_export():
    import collections

    class Keys(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return collections.OrderedDict([("out-image", self.b(self.a(x))), ("class", x)])

    with pytest.raises(UntraceableModelError, match=r"OrderedDict \(a dict subclass\) with keys \['out-image', 'class'\].*plain dict"):
        shortcutify(Keys(), "a", "b", torch.rand(1, 3, 8, 8), capture="export")


class _Float64Middle(nn.Module):
    """A submodule kept in float64 between float32 layers."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1).double()
        self.e = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.relu(self.b(h.double())).float()
        return self.d(torch.relu(self.e(torch.relu(self.c(h)))))


def test_taps_in_another_dtype_than_the_generators_weights_are_refused_and_not_suggested():
    from shortcutify import suggest_taps

    gen, x = _Float64Middle().eval(), torch.rand(1, 3, 16, 16)
    with pytest.raises(TapShapeError, match=r"enc_layer 'b' is a float64 value, but the block computes in float32"):
        shortcutify(gen, "b", "e", x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = suggest_taps(gen, x, top=20, progress=False)
    assert found and all(s.enc_layer != "b" and s.dec_layer != "b" for s in found)
    sv = shortcutify(gen, "a", "e", x)  # taps in float32 around the float64 part
    assert torch.equal(sv(x), gen(x))


class _PerSample(nn.Module):
    """Per-sample kernels applied with torch.func.vmap."""

    def __init__(self, c):
        super().__init__()
        self.c, self.pred = c, nn.Linear(c, c * c)

    def forward(self, x):
        k = self.pred(x.mean((2, 3))).view(-1, self.c, self.c, 1, 1) * 0.1
        return torch.func.vmap(lambda xi, ki: F.conv2d(xi.unsqueeze(0), ki).squeeze(0))(x, k)


class _Vmapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.mid, self.b, self.out = nn.Conv2d(3, 8, 3, padding=1), _PerSample(8), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.out(torch.relu(self.b(h + self.mid(h))))


def test_vmap_in_forward_names_the_modules_to_keep_whole_and_that_remedy_works():
    gen, x = _Vmapped().eval(), torch.rand(1, 3, 16, 16)
    with pytest.raises(UntraceableModelError, match=r"torch\.func\.vmap in forward.*capture='fx', leaf_modules=\['mid'\]"):
        shortcutify(gen, "a", "b", x)
    sv = shortcutify(gen, "a", "b", x, capture="fx", leaf_modules=["mid"])
    assert torch.equal(sv(x), gen(x))


class _Sliced(nn.Module):
    """``body`` is only ever called through a slice; ``extra`` is never reached (a loop that stops early)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.extra = nn.Conv2d(8, 8, 3, padding=1)
        self.mid, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.out(torch.relu(self.mid(self.body[:3](x))))


@pytest.mark.parametrize("name, inside", [("body", r"\['body\.0', 'body\.1', 'body\.2'\]"), ("extra", None)])
def test_a_module_the_graph_never_calls_whole_is_named_as_such_with_its_children(name, inside):
    from shortcutify import UnknownTapError

    with pytest.raises(UnknownTapError, match=rf"enc_layer '{name}' is a module of the generator, but the graph holds no call of it") as err:
        shortcutify(_Sliced().eval(), name, "mid", torch.rand(1, 3, 16, 16))
    assert (inside is None) == ("Tap a module inside it" not in str(err.value))
    if inside:
        assert re.search(inside, str(err.value))


def test_a_tap_computed_from_weights_alone_is_named_as_such():
    gen = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1)), nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    ).eval()
    with pytest.raises(TapShapeError, match=r"'2\.parametrizations\.weight' .* computed from the generator's weights alone"):
        shortcutify(gen, "2.parametrizations.weight", "4", torch.rand(1, 3, 8, 8), capture="export")


def test_a_tensor_in_concrete_args_is_refused_naming_where_tensors_go():
    with pytest.raises(TypeError, match=r"concrete_args \['style'\] hold tensors.*example_inputs=\(frame, style\)"):
        shortcutify(FourConvs(), "a", "c", torch.rand(1, 3, 8, 8), concrete_args={"style": torch.ones(1)})


def test_a_generator_holding_torchscript_submodules_that_no_path_captures_names_them():
    class Scripted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
            self.b = torch.jit.script(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()))

        def forward(self, x):
            return self.c(self.b(torch.relu(self.a(x))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch deprecates torch.jit.script)
        gen = Scripted().eval()
    with pytest.raises(UntraceableModelError, match=r"holds TorchScript submodules \['b'\]"):
        shortcutify(gen, "a", "c", torch.rand(1, 3, 8, 8))


class _Gate(nn.Module):
    """Identity that, once armed, waits inside the call until released (a call still running in one thread)."""

    def __init__(self):
        super().__init__()
        import threading

        self.armed, self.entered, self.release = False, threading.Event(), threading.Event()

    def forward(self, x):
        if self.armed:
            self.entered.set()
            assert self.release.wait(timeout=60)
        return x


class _GatedGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = _Gate()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.dec = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.out(torch.relu(self.dec(torch.relu(self.mid(torch.relu(self.enc(self.gate(x))))))))


def test_a_call_from_another_thread_while_one_runs_is_refused_and_the_running_call_completes():
    import threading

    from shortcutify import ConcurrentCallError

    torch.manual_seed(0)
    gen = _GatedGenerator().eval()
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, leaf_modules=[_Gate])
    sv(x)
    expected = gen(x)
    gen.gate.armed = True
    results = []
    worker = threading.Thread(target=lambda: results.append(sv(x)))
    worker.start()
    assert gen.gate.entered.wait(timeout=60)
    try:
        with pytest.raises(ConcurrentCallError, match=r"called from two threads at once.*its own module"):
            sv(x)
    finally:
        gen.gate.release.set()
        worker.join(timeout=60)
    gen.gate.armed = False
    assert len(results) == 1 and results[0].shape == expected.shape
    assert sv(x).shape == expected.shape  # the module serves its thread again (and a new one: the call is over)
    other = []
    thread = threading.Thread(target=lambda: other.append(sv(x)))
    thread.start()
    thread.join(timeout=60)
    assert len(other) == 1
