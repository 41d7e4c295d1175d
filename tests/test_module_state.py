"""What a ShortcutV2V owns (its state dict), and arguments refused up front."""

import copy
import io
import pickle
import warnings

import numpy as np
import pytest
import torch

from shortcutify import FixedInterval, NonFiniteKeyframeWarning, shortcutify
from shortcutify.demo.models import ResnetGenerator


def _sv(seed=0, **kw):
    torch.manual_seed(seed)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    return gen, shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), **kw)


def test_the_block_cannot_be_replaced_only_given_other_weights():
    """The programs run the block the module was made with: a new block assigned would be trained and saved
    by nothing that runs frames (before 0.22 the assignment was taken silently)."""
    from shortcutify import make_block

    _, sv = _sv()
    block = sv.block
    other = make_block(block.resolution, sv.config.enc_shape[0], sv.config.dec_shape[0], width=block.width)
    with pytest.raises(AttributeError, match=r"sv\.block cannot be replaced.*sv\.block\.load_state_dict\(other\.state_dict\(\)\)"):
        sv.block = other
    assert sv.block is block
    sv.block.load_state_dict(other.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(sv.block.state_dict().values(), other.state_dict().values()))


def test_a_block_copied_out_of_the_module_pickles_and_leaves_the_modules_streams_alone():
    """``copy.deepcopy(sv.block)`` (keeping the best block) and ``torch.save(sv.block)``: the copy carries no
    tie to the module, so weights loaded into it end no stream of the module."""
    _, sv = _sv(interval=3)
    frames = _frames(2)
    with torch.no_grad():
        sv(frames[0])
    best = copy.deepcopy(sv.block)
    buffer = io.BytesIO()
    torch.save(sv.block, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    best.load_state_dict(restored.state_dict())
    assert sv.reference is not None  # the stream goes on
    with torch.no_grad():
        sv(frames[1])
    assert not sv.last_was_keyframe
    sv.block.load_state_dict(best.state_dict())  # weights loaded into the module's own block end its streams
    assert sv.reference is None


def test_the_state_dict_holds_the_block_alone():
    gen, sv = _sv()
    assert set(sv.state_dict()) == {f"block.{k}" for k in sv.block.state_dict()}
    assert {id(p) for p in sv.parameters()} == {id(p) for p in sv.block.parameters()}


def test_loading_another_modules_state_never_touches_the_users_generator():
    gen, sv = _sv(seed=0)
    other_gen, other = _sv(seed=1)
    for p in other.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    teacher_before = {k: v.clone() for k, v in gen.state_dict().items()}
    sv.load_state_dict(other.state_dict())
    assert all(torch.equal(v, teacher_before[k]) for k, v in gen.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(sv.block.state_dict().values(), other.block.state_dict().values()))


@pytest.mark.parametrize("target", ["module", "block"])
def test_loading_new_block_weights_mid_stream_starts_every_stream_again(target):
    """The reference the old weights prepared is not used with the new ones: the next frame is a keyframe."""
    _, sv = _sv(seed=0)
    _, other = _sv(seed=1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        sv(x)
        sv(x)
        assert not sv.last_was_keyframe
        if target == "module":
            sv.load_state_dict(other.state_dict())
        else:
            sv.block.load_state_dict(other.block.state_dict())
        assert sv.reference is None
        sv(x)
        assert sv.last_was_keyframe


def test_a_state_that_does_not_fit_is_refused_and_changes_nothing():
    _, sv = _sv(seed=0)
    _, wider = _sv(seed=1, width=6)  # some tensors of the same shapes (biases of the heads' outputs), others not
    before = {k: v.clone() for k, v in sv.state_dict().items()}
    for bad in (wider.state_dict(), {k: v for k, v in list(before.items())[:-1]}):  # other shapes; a key missing
        with pytest.raises(RuntimeError):
            sv.load_state_dict({k: v + 1 for k, v in bad.items()})
        assert all(torch.equal(v, before[k]) for k, v in sv.state_dict().items())


def test_to_still_moves_the_teacher_and_the_programs():
    gen, sv = _sv()
    sv.to(torch.float64)
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    assert gen.model[1].weight.dtype == torch.float64
    assert torch.equal(sv(x), gen(x))
    assert sv(x + 0.1).dtype == torch.float64


def test_pickling_is_refused_with_what_to_do_instead():
    _, sv = _sv()
    for attempt in (lambda: pickle.dumps(sv), lambda: torch.save(sv, io.BytesIO()), lambda: copy.deepcopy(sv)):
        with pytest.raises(TypeError, match=r"sv\.save\(path\).*shortcutify\.load"):
            attempt()


@pytest.mark.parametrize("interval", [np.int64(3), np.int32(2), 4])
def test_integer_intervals_of_any_integer_type_are_accepted(interval):
    _, sv = _sv(interval=interval)
    assert sv.policy.interval == int(interval) and type(sv.policy.interval) is int
    assert FixedInterval(interval).interval == int(interval)


@pytest.mark.parametrize("interval", [0, -1, 2.5, "3", True])
def test_a_bad_interval_is_refused_when_given(interval):
    with pytest.raises(ValueError, match="interval"):
        FixedInterval(interval)


@pytest.mark.parametrize("interval", [0, -1, 0.5, float("nan"), float("inf"), "3", True])
def test_a_bad_mean_interval_for_costs_is_refused(interval):
    _, sv = _sv()
    with pytest.raises(ValueError, match="interval"):
        sv.cost(interval=interval)


def test_costs_take_a_mean_interval_between_integers():
    _, sv = _sv()
    r = sv.cost(interval=2.5)
    assert r.amortised_macs() == pytest.approx((r.keyframe.macs + 1.5 * r.shortcut.macs) / 2.5)


def _frames(n, seed=0, streams=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(streams, 3, 16, 16, generator=gen) * 2 - 1 for _ in range(n)]


def test_a_keyframe_with_non_finite_taps_is_not_kept_as_the_reference():
    """A NaN frame on a keyframe: the next frame takes a keyframe again (and equals the teacher),
    where a shortcut from that reference would be NaN; one warning, on that next call, says why."""
    gen, sv = _sv(interval=3)
    frames = _frames(4)
    bad = frames[0].clone()
    bad[..., 3, 5] = float("nan")
    sv(bad)
    assert sv.last_was_keyframe
    with pytest.warns(NonFiniteKeyframeWarning, match="stream\\(s\\) \\[0\\].*non-finite") as caught:
        out = sv(frames[1])  # (the check is read here: the keyframe did not wait for it)
    assert caught[0].filename == __file__  # the warning points at the user's call
    assert sv.last_was_keyframe  # the policy alone would have taken the shortcut here
    with torch.no_grad():
        torch.testing.assert_close(out, gen(frames[1]))
    sv(frames[2])
    assert not sv.last_was_keyframe and torch.isfinite(sv(frames[3])).all()  # the schedule goes on from the new keyframe


def test_a_non_finite_keyframe_taken_under_inference_mode_is_taken_again_outside_it():
    """The state made under ``torch.inference_mode()`` holds inference tensors: marking the stream stale
    must not write into them (before 0.22 every later call outside the mode failed until reset())."""
    gen, sv = _sv(interval=3)
    frames = _frames(3)
    bad = frames[0].clone()
    bad[..., 3, 5] = float("nan")
    with torch.inference_mode():
        sv(bad)
    with pytest.warns(NonFiniteKeyframeWarning):
        out = sv(frames[1])
    assert sv.last_was_keyframe
    with torch.no_grad():
        torch.testing.assert_close(out, gen(frames[1]))
    sv(frames[2])
    assert not sv.last_was_keyframe


def test_finite_keyframes_keep_the_schedule_and_warn_nothing():
    _, sv = _sv(interval=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteKeyframeWarning)
        for x in _frames(6):
            sv(x)
    assert not sv.last_was_keyframe  # frame 5 of interval 3: a shortcut frame


def test_only_the_stream_with_a_non_finite_keyframe_repeats_it():
    _, sv = _sv(interval=3)
    frames = _frames(3, streams=2)
    bad = frames[0].clone()
    bad[1, :, 2, 2] = float("inf")
    sv(bad)
    with pytest.warns(NonFiniteKeyframeWarning, match="stream\\(s\\) \\[1\\]"):
        sv(frames[1])
    assert sv.last_keyframes.tolist() == [False, True]
    sv(frames[2])
    assert sv.last_keyframes.tolist() == [False, False]


def test_a_non_finite_keyframe_in_a_mixed_batch_is_taken_again_for_that_stream_only():
    _, sv = _sv(interval=3)
    frames = _frames(4, streams=2)
    sv(frames[0])
    sv.reset(streams=[1])
    bad = frames[1].clone()
    bad[1, 0, 0, 0] = float("nan")
    sv(bad)  # stream 1 keyframes (on a NaN frame), stream 0 takes the shortcut
    assert sv.last_keyframes.tolist() == [False, True]
    with pytest.warns(NonFiniteKeyframeWarning, match="stream\\(s\\) \\[1\\]"):
        out = sv(frames[2])
    assert sv.last_keyframes.tolist() == [False, True] and torch.isfinite(out).all()


class _Normed(torch.nn.Module):
    """Convs with a BatchNorm whose running statistics are not the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.b, self.c, self.d = (torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 3, padding=1))
        with torch.no_grad():
            self.bn.running_mean.normal_()
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.d(torch.relu(self.c(torch.relu(self.b(torch.relu(self.bn(self.a(x))))))))


class _Dropped(_Normed):
    """:class:`_Normed` with a dropout after its first conv (pix2pix keeps one on at test time)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.d(torch.relu(self.c(torch.relu(self.b(torch.relu(self.bn(self.drop(self.a(x)))))))))


def test_a_dropout_kept_on_for_test_time_noise_is_switched_off_when_wrapping_and_told():
    """pix2pix keeps its dropouts on at test time: ``generator.eval(); generator.drop.train()``. The module runs the
    generator in eval mode, so wrapping it says that these modules are put in eval mode (a generator in training
    mode as a whole, a forgotten ``.eval()``, is put in eval mode as README says, without a warning)."""
    gen = _Dropped().eval()
    gen.drop.train()
    with pytest.warns(UserWarning, match=r"modules inside it are in training mode: \['drop'\].*put them in eval mode") as caught:
        shortcutify(gen, "a", "c", torch.zeros(1, 3, 16, 16))
    assert caught[0].filename == __file__ and not gen.drop.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shortcutify(_Dropped().train(), "a", "c", torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("inside", [None, "bn", "drop"], ids=["the-generator", "bn", "drop"])
def test_a_generator_or_a_module_inside_it_put_in_training_mode_is_run_frozen_and_told(capture, inside):
    """``parent.train()`` on a module holding the generator, ``generator.bn.train()``, or a dropout switched on for
    test-time noise, after wrapping: keyframes would use batch statistics (and update the generator's running
    statistics) or drop out (under fx the program calls those modules; export fixed the modes when it captured).
    Either way the module runs the generator in eval mode, and says so at the caller's line."""
    torch.manual_seed(0)
    gen = _Dropped()
    sv = shortcutify(gen, "a", "c", torch.zeros(1, 3, 16, 16), capture=capture)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = gen(x)
    running = gen.bn.running_mean.clone()
    (gen if inside is None else getattr(gen, inside)).train()
    told = (r"generator \(_Dropped\) was in training mode.*put it back in eval mode" if inside is None else
            rf"modules of the generator \(_Dropped\) were in training mode: \['{inside}'\]")
    with pytest.warns(UserWarning, match=told) as caught:
        out = sv(x)
    assert caught[0].filename == __file__
    assert not any(m.training for m in gen.modules())
    torch.testing.assert_close(out, expected)
    assert torch.equal(gen.bn.running_mean, running)
    sv.train()  # the block's mode is the module's own: not the generator's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sv(x)
    assert sv.block.training and not any(m.training for m in gen.modules())


class _Randomised(torch.nn.Module):
    """An activation whose slope is random in training mode (``RReLU``) and a spectrally normalised conv (its power
    iteration updates buffers in training mode): neither a dropout nor a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 3, 3, padding=1)
        self.act = torch.nn.RReLU()
        self.sn = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, x):
        return self.c(self.act(self.sn(self.b(self.act(self.a(x))))))


@pytest.mark.parametrize("inside", ["act", "sn"])
def test_any_module_an_fx_program_calls_put_in_training_mode_is_found(inside):
    torch.manual_seed(0)
    gen = _Randomised().eval()
    sv = shortcutify(gen, "a", "b", torch.zeros(1, 3, 16, 16), capture="fx")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = gen(x)
    buffers = {k: v.clone() for k, v in gen.state_dict().items()}
    getattr(gen, inside).train()
    with pytest.warns(UserWarning, match=rf"were in training mode: \['{inside}"):
        out = sv(x)
    torch.testing.assert_close(out, expected)
    assert all(torch.equal(v, buffers[k]) for k, v in gen.state_dict().items())


def test_a_generator_cast_outside_the_module_is_named_with_the_way_back():
    """Two modules sharing one generator: casting one casts the generator under the other."""
    from shortcutify import PlacementError

    gen, sv = _sv()
    other = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        sv(x)
        other.double()
        with pytest.raises(PlacementError, match=r"generator's weights are torch\.float64 on cpu, this module's block torch\.float32.*sv\.to\(\.\.\.\)"):
            sv(x)
        sv.double()
        torch.testing.assert_close(sv(x.double()), gen(x.double()))


def test_a_module_moved_to_the_meta_device_refuses_frames():
    """(before: a CPU frame came back as uninitialised memory, each frame a keyframe, with a warning blaming the frames)"""
    from shortcutify import GeneratorStateError

    _, sv = _sv()
    sv.to("meta")
    x = torch.randn(1, 3, 16, 16)
    for call in (sv, sv.run_keyframe, sv.cost):
        with torch.no_grad(), pytest.raises(GeneratorStateError, match=r"meta device.*no values"):
            call(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_keyframe_check_finds_exactly_the_streams_whose_taps_hold_a_nan_or_an_infinity(dtype):
    """Against the naive reference (any non-finite value per stream, in either tap)."""
    from shortcutify.core.module import KeyframeOutput, _not_finite

    enc, dec = torch.randn(8, 4, 3, 3).to(dtype), torch.randn(8, 2, 5, 5).to(dtype)
    enc[1, 0, 0, 0], enc[2, 3, 2, 1], dec[3, 1, 4, 4] = float("nan"), float("inf"), float("-inf")
    enc[4, 0, 0, 0], dec[4, 0, 0, 0] = float("inf"), float("-inf")  # (inf - inf in the sums: NaN, still found)
    dec[5, 0, 0, 0] = float("nan")
    enc[6] = 60000.0 if dtype == torch.float16 else 1e30  # large but finite: summed in float32 at least, no overflow
    want = ~(enc.flatten(1).isfinite().all(1) & dec.flatten(1).isfinite().all(1))
    got = _not_finite(KeyframeOutput(None, enc, dec))
    assert got.dtype == torch.bool and got.tolist() == want.tolist() == [False, True, True, True, True, True, False, False]
