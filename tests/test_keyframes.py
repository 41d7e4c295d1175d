"""Specification of keyframe policies: adaptive keyframes, per-stream decisions, the policy protocol."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._pytree import tree_flatten

from generators import TinyUNet, TwoInputGen
from shortcutify import (
    AdaptiveKeyframes,
    FixedInterval,
    FrameSignal,
    PolicyError,
    calibrate,
    StreamSplitError,
    load,
    shortcutify,
)
from shortcutify.core.policy import change_since_keyframe, tap_l1
from shortcutify.demo.models import ResnetGenerator


def _live(sv, seed=0):
    """Random non-zero block weights: flows, offsets, masks and corrections all act."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sv.block.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return sv


def _resnet_sv(batch=2, size=16, capture="fx", policy=None):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(batch, 3, size, size)
    policy = policy or AdaptiveKeyframes(0.3, max_interval=5)
    return gen, _live(shortcutify(gen, "model.4", "model.12", x, policy=policy, capture=capture))


def _same(x, y):
    (xs, xspec), (ys, yspec) = tree_flatten(x), tree_flatten(y)
    return xspec == yspec and all(torch.equal(a, b) for a, b in zip(xs, ys))


def _stream(n, size=16, seed=1, cut_at=None):
    """Frames of one slowly drifting stream [1, 3, size, size]; new content from ``cut_at`` on."""
    g = torch.Generator().manual_seed(seed)
    base, other = torch.randn(1, 3, size, size, generator=g), torch.randn(1, 3, size, size, generator=g)
    drift = torch.randn(1, 3, size, size, generator=g)
    return [(other if cut_at is not None and i >= cut_at else base) + 0.01 * i * drift for i in range(n)]


# ------------------------------------------------------------------ the policies themselves
def test_adaptive_policy_decides_from_change_within_its_interval_range():
    p = AdaptiveKeyframes(0.5, min_interval=2, max_interval=4)
    since = torch.tensor([1, 1, 2, 3, 4, 4])
    change = torch.tensor([0.9, 0.1, 0.6, 0.5, 0.0, 0.9])
    assert p.select(FrameSignal(since, change)).tolist() == [False, False, True, False, True, True]
    assert p.interval == 4 and p.uses_change


def test_fixed_interval_decides_by_count_alone_and_keeps_the_old_protocol():
    p = FixedInterval(3)
    assert p.select(FrameSignal(torch.tensor([1, 2, 3, 4]))).tolist() == [False, False, True, True]
    assert [p.is_keyframe(n) for n in (1, 2, 3)] == [False, False, True] and not p.uses_change


@pytest.mark.parametrize(
    "kwargs",
    [dict(threshold=0), dict(threshold=-1.0), dict(threshold=float("nan")), dict(threshold=True),
     dict(max_interval=1), dict(min_interval=0), dict(min_interval=4, max_interval=3), dict(max_interval=2.5),
     dict(expected_interval=0.5), dict(expected_interval=9.0)],
)
def test_adaptive_policy_refuses_bad_settings_naming_them(kwargs):
    kwargs = {"threshold": 0.3, **kwargs}
    threshold = kwargs.pop("threshold")
    with pytest.raises(ValueError, match="|".join(list(kwargs) or ["threshold"])):
        AdaptiveKeyframes(threshold, **kwargs)


def test_the_change_is_the_l1_path_since_the_keyframe_over_the_keyframe_norm():
    a_ref = torch.randn(3, 4, 5, 5)
    a = a_ref.clone()
    a[1] = -a_ref[1]
    a[2] = a_ref[2] * 1.5
    assert tap_l1(a_ref).tolist() == pytest.approx(a_ref.abs().flatten(1).sum(1).tolist(), rel=1e-5)
    steps = tap_l1(a - a_ref) + tap_l1(a_ref - a)  # there and back: the path counts, not the distance
    assert change_since_keyframe(steps, tap_l1(a_ref)).tolist() == pytest.approx([0.0, 4.0, 1.0], rel=1e-5)
    assert change_since_keyframe(torch.ones(1), torch.zeros(1)).isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_change_of_a_low_precision_tap_is_summed_in_float32(dtype):
    """A float16 tap of 16x128x128 has an L1 norm far above float16's largest value (65504): summed in float16 it
    is infinite, the change 0 and motion never triggers a keyframe."""
    a_ref = torch.randn(2, 16, 128, 128)
    a = a_ref + 0.3 * torch.randn_like(a_ref)
    want = change_since_keyframe(tap_l1(a - a_ref), tap_l1(a_ref))
    low = change_since_keyframe(tap_l1(a.to(dtype) - a_ref.to(dtype)), tap_l1(a_ref.to(dtype)))
    assert a_ref.abs().sum() > 2 * 65504 and torch.isfinite(low).all()
    assert low.tolist() == pytest.approx(want.tolist(), rel=0.02)


class _Recording(AdaptiveKeyframes):
    """Records the change it is shown."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def select(self, signal):
        self.seen.append(signal.change.clone())
        return super().select(signal)


def test_the_module_shows_the_policy_the_path_its_encoder_tap_travelled_since_the_keyframe():
    policy = _Recording(100.0, max_interval=5)
    gen, sv = _resnet_sv(batch=2, policy=policy)
    x0, x1 = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    for x in (x0, x1, x0, x0):  # away and back: the distance to the keyframe returns to 0, the path does not
        sv(x)
    a0, a1 = sv.encode(x0), sv.encode(x1)
    step = tap_l1(a1 - a0) + 0.0  # [B]
    norm = tap_l1(a0)
    expected = [step / norm, 2 * step / norm, 2 * step / norm]
    assert len(policy.seen) == 3
    for seen, want in zip(policy.seen, expected):
        assert torch.allclose(seen, want, rtol=1e-5)


# ------------------------------------------------------------------ adaptive keyframes in a stream
def test_a_still_stream_gets_keyframes_only_at_the_maximum_interval():
    _, sv = _resnet_sv(batch=1)
    frame = _stream(1)[0]
    flags = []
    for _ in range(60):
        sv(frame)
        flags.append(sv.last_was_keyframe)
    assert [i for i, k in enumerate(flags) if k] == list(range(0, 60, 5))
    default = AdaptiveKeyframes()
    assert default.interval > 3 and 60 / default.interval < 60 / 3  # fewer keyframes than FixedInterval(3)


def test_a_scene_cut_takes_a_keyframe_at_once_and_keyframes_equal_the_teacher():
    gen, sv = _resnet_sv(batch=1)
    flags = []
    for i, x in enumerate(_stream(8, cut_at=3)):
        out = sv(x)
        flags.append(sv.last_was_keyframe)
        if sv.last_was_keyframe:
            assert torch.equal(out, gen(x))
    assert flags == [True, False, False, True, False, False, False, False]


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("which", ["resnet", "unet", "two_inputs"])
def test_split_programs_compute_exactly_what_the_whole_programs_do(which, capture):
    torch.manual_seed(0)
    if which == "resnet":
        gen, taps, x = ResnetGenerator(ngf=8, n_blocks=2), ("model.4", "model.12"), (torch.randn(2, 3, 16, 16),)
    elif which == "unet":
        gen, taps, x = TinyUNet(), ("down", "up"), (torch.randn(2, 3, 16, 16),)
    else:
        gen, taps, x = TwoInputGen(), ("down", "up"), (torch.randn(2, 4, 16, 16), torch.randn(2, 3, 16, 16))
    sv = _live(shortcutify(gen, *taps, x, policy=AdaptiveKeyframes(0.3), capture=capture))
    stages = sv._programs(x, {}).staged()
    y = tuple(v + 0.1 * torch.randn_like(v) for v in x)
    with torch.no_grad():
        key = sv.run_keyframe(*x)
        ref = sv.prepare_reference(key)
        head = stages.head(*x)
        assert stages.keyframe is not None
        out, a, f = stages.keyframe(*x, **dict(zip(stages.boundary, head)))
        assert _same(out, key.output) and torch.equal(a, key.enc) and torch.equal(f, key.dec)
        head = stages.head(*y)
        rest = stages.inference(*y, **dict(zip(stages.boundary, head)), shortcut_reference=ref)
        assert _same(rest, sv.predict(*y, reference=ref))


def test_the_decision_is_counted_in_the_costs():
    _, fixed = _resnet_sv(policy=FixedInterval(3))
    _, adaptive = _resnet_sv(policy=AdaptiveKeyframes(0.3, max_interval=5))
    cf, ca = fixed.cost(), adaptive.cost()
    assert cf.decision.macs == 0
    assert ca.decision.macs == int(torch.tensor(adaptive.enc.shape).prod())  # one per element of the encoder tap
    assert ca.shortcut.macs == cf.shortcut.macs + ca.decision.macs
    assert ca.keyframe.macs > cf.keyframe.macs and ca.interval == 5
    assert "α=5: the policy's largest interval" in str(ca) and "best case; calibrate()" in str(ca)  # (not a mean)
    assert "α=3: the policy's interval" in str(cf) and "α=2: as given" in str(fixed.cost(interval=2))
    adaptive.policy = AdaptiveKeyframes(0.3, max_interval=5, expected_interval=2.5)
    assert adaptive.cost().interval == 2.5 and "expected mean interval" in str(adaptive.cost())


# ------------------------------------------------------------------ per-stream keyframes
def test_mixed_batch_keyframes_only_the_stream_with_a_scene_cut_and_matches_each_stream_alone():
    _, sv = _resnet_sv(batch=2)
    cut, still = _stream(7, seed=1, cut_at=3), _stream(7, seed=2)
    outs, keys = [], []
    for a, b in zip(cut, still):
        outs.append(sv(torch.cat([a, b])))
        keys.append(sv.last_keyframes.tolist())
    assert keys[3] == [True, False] and keys[0] == [True, True]
    assert not any(k[1] for k in keys[1:5])
    for stream, frames in enumerate((cut, still)):
        _, alone = _resnet_sv(batch=1)
        for t, x in enumerate(frames):
            torch.testing.assert_close(alone(x), outs[t][stream : stream + 1], rtol=1e-5, atol=1e-5)
            assert alone.last_was_keyframe == keys[t][stream]


def test_mixed_batches_work_on_the_export_path_too():
    _, sv = _resnet_sv(batch=2, capture="export")
    _, fx_sv = _resnet_sv(batch=2, capture="fx")
    cut, still = _stream(5, seed=1, cut_at=3), _stream(5, seed=2)
    keys = []
    for a, b in zip(cut, still):
        x = torch.cat([a, b])
        torch.testing.assert_close(sv(x), fx_sv(x), rtol=1e-5, atol=1e-5)
        keys.append(sv.last_keyframes.tolist())
        assert keys[-1] == fx_sv.last_keyframes.tolist()
    assert [True, False] in keys and sv.config.capture == "export"


def test_reset_of_some_streams_keyframes_those_only():
    gen, sv = _resnet_sv(batch=3, policy=FixedInterval(4))
    frames = [torch.cat([s[i] for s in (_stream(4, seed=1), _stream(4, seed=2), _stream(4, seed=3))]) for i in range(4)]
    sv(frames[0])
    sv(frames[1])
    sv.reset(streams=[2])
    out = sv(frames[2])
    assert sv.last_keyframes.tolist() == [False, False, True] and not sv.last_was_keyframe
    assert torch.equal(out[2:], gen(frames[2][2:]))
    sv.reset(streams=torch.tensor([True, False, False]))
    sv(frames[3])
    assert sv.last_keyframes.tolist() == [True, False, False]
    with pytest.raises(IndexError, match="3 streams"):
        sv.reset(streams=[3])
    with pytest.raises(IndexError, match="mask"):
        sv.reset(streams=torch.tensor([True, False]))
    sv.reset(streams=[])  # no stream: nothing changes
    sv(frames[3])
    assert sv.last_keyframes.tolist() == [False, True, False]  # stream 1 at its interval, the others kept
    with pytest.raises(IndexError, match="integers"):
        sv.reset(streams=[0.5])
    sv.reset()
    with pytest.raises(IndexError, match="integers"):  # checked before the first frame too
        sv.reset(streams=[0.5])


class _Scheduled:
    """A policy that replays a given decision per stream and frame (for property tests)."""

    def __init__(self, schedule):
        self.schedule, self.t = schedule, 0
        self.interval = 1 + max(len(s) for s in schedule)

    def select(self, signal):
        self.t += 1
        return torch.tensor([s[self.t - 1] if self.t - 1 < len(s) else False for s in self.schedule]) | (signal.since_keyframe >= self.interval)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=2, max_size=3))
def test_a_streams_outputs_never_depend_on_the_other_streams(schedule):
    n = len(schedule)
    streams = [_stream(6, seed=10 + i) for i in range(n)]
    _, sv = _resnet_sv(batch=n, policy=_Scheduled(schedule))
    together = [sv(torch.cat([s[t] for s in streams])) for t in range(6)]
    for i, frames in enumerate(streams):
        _, alone = _resnet_sv(batch=1, policy=_Scheduled([schedule[i]]))
        for t, x in enumerate(frames):
            torch.testing.assert_close(alone(x), together[t][i : i + 1], rtol=1e-5, atol=1e-5)


def test_streams_that_cannot_be_split_are_named():
    class Conditioned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ResnetGenerator(ngf=8, n_blocks=2)

        def forward(self, x, style):
            return self.inner(x) * style.mean()

    torch.manual_seed(0)
    gen = Conditioned()
    x, style = torch.randn(2, 3, 16, 16), torch.randn(5)
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", (x, style), policy=_Scheduled([[True], [False]]))
    sv(x, style)
    with pytest.raises(StreamSplitError, match=r"shape \(5,\)"):
        sv(x, style)


def test_outputs_that_cannot_be_merged_by_stream_are_named():
    class WithStatistic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ResnetGenerator(ngf=8, n_blocks=2)

        def forward(self, x):
            y = self.inner(x)
            return {"image": y, "scale": y.abs().mean()}

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    sv = shortcutify(WithStatistic(), "inner.model.4", "inner.model.12", x, policy=FixedInterval(3))
    sv(x)
    sv.reset(streams=[1])
    with pytest.raises(StreamSplitError, match=r"output at \['scale'\].*Return every tensor output as \[B, \.\.\.\]"):
        sv(x)


# ------------------------------------------------------------------ the protocol
def test_old_style_policies_keep_working():
    class EveryOther:
        interval = 2

        def is_keyframe(self, n):
            return n >= 2

    _, sv = _resnet_sv(batch=2, policy=EveryOther())
    flags = []
    for x in _stream(5):
        sv(torch.cat([x, x]))
        flags.append(sv.last_was_keyframe)
    assert flags == [True, False, True, False, True]


def test_a_policy_must_answer_one_bool_per_stream():
    class Wrong:
        interval = 3

        def select(self, signal):
            return torch.tensor([True])

    _, sv = _resnet_sv(batch=2, policy=Wrong())
    x = torch.randn(2, 3, 16, 16)
    sv(x)
    with pytest.raises(PolicyError, match=r"shape \[2\]"):
        sv(x)
    with pytest.raises(TypeError, match="select"):
        sv.policy = object()


def test_an_adaptive_policy_is_saved_with_the_block_and_restored(tmp_path):
    gen, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(0.123, min_interval=2, max_interval=7, expected_interval=3.5))
    sv.save(tmp_path / "b")
    back = load(gen, tmp_path / "b")
    assert isinstance(back.policy, AdaptiveKeyframes)
    assert (back.policy.threshold, back.policy.min_interval, back.policy.max_interval, back.policy.expected_interval) == (0.123, 2, 7, 3.5)


def test_moving_the_module_keeps_adaptive_keyframes_working():
    gen, sv = _resnet_sv(batch=1)
    frames = _stream(3)
    sv(frames[0])
    sv.double()
    out = sv(frames[1].double())
    assert sv.last_was_keyframe and out.dtype == torch.float64  # moved: a fresh keyframe
    out = sv(frames[2].double())
    assert not sv.last_was_keyframe and out.dtype == torch.float64


# ------------------------------------------------------------------ calibration
def _clips(n=3, t=8, size=16):
    from generators import moving_clips

    return moving_clips(n=n, frames=t, size=size, seed=3)


def _keyframe_rate(sv, clips):
    from shortcutify import evaluate

    res = evaluate(sv, clips)
    return sum(res.keyframe) / len(res.keyframe), res


def test_calibration_to_a_keyframe_rate_is_exact_on_its_clips():
    _, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(0.3, max_interval=5))
    clips = _clips()
    cal = calibrate(sv, clips, keyframe_rate=1 / 3, progress=False)
    assert sv.policy is cal.policy and cal.policy.max_interval == 5
    rate, _ = _keyframe_rate(sv, clips)
    assert rate == pytest.approx(cal.keyframe_rate)
    assert abs(cal.keyframe_rate - 1 / 3) <= min(abs(r - 1 / 3) for _, r in cal.candidates) + 1e-12
    assert cal.policy.expected_interval == pytest.approx(1 / cal.keyframe_rate)


def test_calibration_to_a_quality_keeps_every_shortcut_frame_above_it_with_fewest_keyframes():
    _, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(0.3, max_interval=4))
    clips = _clips()
    loose = calibrate(sv, clips, min_psnr=0.0, progress=False)
    rate, res = _keyframe_rate(sv, clips)
    assert rate == pytest.approx(loose.keyframe_rate) and loose.keyframe_rate == min(r for _, r in loose.candidates)
    target = sorted(p for p, k in zip(res.psnr, res.keyframe) if not k)[len(res.psnr) // 4] + 1e-3  # above a quarter of them
    cal = calibrate(sv, clips, min_psnr=target, progress=False)
    rate, res = _keyframe_rate(sv, clips)
    shortcut = [p for p, k in zip(res.psnr, res.keyframe) if not k]
    assert rate == pytest.approx(cal.keyframe_rate) and cal.keyframe_rate > loose.keyframe_rate
    assert min(shortcut, default=float("inf")) >= target - 1e-4
    if shortcut:
        assert cal.worst_psnr == pytest.approx(min(shortcut), abs=1e-4)


def test_calibration_leaves_the_policy_alone_when_asked_and_refuses_bad_targets():
    _, sv = _resnet_sv(batch=1, policy=FixedInterval(3))
    clips = _clips(n=1, t=6)
    cal = calibrate(sv, clips, keyframe_rate=0.5, apply=False, progress=False)
    assert isinstance(sv.policy, FixedInterval) and isinstance(cal.policy, AdaptiveKeyframes)
    with pytest.raises(ValueError, match="exactly one target"):
        calibrate(sv, clips, progress=False)
    with pytest.raises(ValueError, match="exactly one target"):
        calibrate(sv, clips, keyframe_rate=0.5, min_psnr=30, progress=False)
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="keyframe_rate"):
            calibrate(sv, clips, keyframe_rate=bad, progress=False)
    with pytest.raises(ValueError, match="at least one clip"):
        calibrate(sv, [], keyframe_rate=0.5, progress=False)
    with pytest.raises(TypeError, match="AdaptiveKeyframes"):
        calibrate(sv, clips, keyframe_rate=0.5, policy=FixedInterval(2), progress=False)


def test_calibration_refuses_clips_it_cannot_calibrate_on_and_warns_of_an_unreachable_rate():
    _, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(0.3, max_interval=4))
    clips = _clips(n=2, t=6)
    with pytest.raises(ValueError, match="clip 1 has 1 frame"):
        calibrate(sv, [clips[0], clips[1][:1]], keyframe_rate=1 / 3, progress=False)
    with pytest.raises(ValueError, match=r"no threshold keeps every shortcut frame at or above 500.*distill the block") as e:
        calibrate(sv, clips, min_psnr=500.0, progress=False)  # not by taking every frame as a keyframe
    assert "or min_interval" not in str(e.value)  # (min_interval=1 already: no advice to lower it)
    with pytest.raises(ValueError, match="Lower min_psnr or min_interval"):
        calibrate(sv, clips, min_psnr=500.0, policy=AdaptiveKeyframes(0.3, min_interval=2, max_interval=4), progress=False)
    with pytest.warns(UserWarning, match="closest to 0.1 that these clips allow is 0.5"):
        cal = calibrate(sv, [c[:2] for c in clips], keyframe_rate=0.1, progress=False)  # two frames: one is a keyframe
    assert cal.keyframe_rate == 0.5


def test_an_uncalibrated_threshold_that_keyframes_nearly_every_frame_says_so_once():
    from shortcutify.core.policy import UNCALIBRATED_FRAMES

    torch.manual_seed(1)
    noise = [torch.randn(2, 3, 16, 16) for _ in range(UNCALIBRATED_FRAMES)]  # every frame a new scene
    for policy, warns in ((AdaptiveKeyframes(1e-3), True), (AdaptiveKeyframes(1e-3, expected_interval=1.0), False),
                          (AdaptiveKeyframes(1e6), False)):
        _, sv = _resnet_sv(batch=2, policy=policy)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for x in noise:
                sv(x)
        said = [w for w in caught if "calibrate(sv, clips" in str(w.message)]
        assert len(said) == (1 if warns else 0), policy


def test_calibration_that_lengthens_the_gaps_the_block_was_trained_on_says_so():
    _, sv = _resnet_sv(batch=1, policy=FixedInterval(3))
    clips = _clips(n=1, t=9)
    with pytest.warns(UserWarning, match="up to 2 with the one replaced"):
        calibrate(sv, clips, keyframe_rate=1 / 3, progress=False)  # AdaptiveKeyframes() allows 5 frames
    _, sv = _resnet_sv(batch=1, policy=FixedInterval(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate(sv, clips, keyframe_rate=1 / 3, policy=AdaptiveKeyframes(max_interval=3), progress=False)


def test_a_policy_with_longer_gaps_than_the_block_was_distilled_for_warns_once_wherever_it_is_set(tmp_path):
    from generators import moving_clips
    from shortcutify import distill, load

    gen, sv = _resnet_sv(batch=1, policy=FixedInterval(3))
    assert sv.distilled_interval is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sv.policy = FixedInterval(8)  # nothing distilled yet: nothing to say
        sv.policy = FixedInterval(3)
        distill(sv, moving_clips(2), steps=1, batch_size=2, progress=False)
        assert sv.distilled_interval == 3
        sv.policy = FixedInterval(2)
        sv.policy = AdaptiveKeyframes(max_interval=3)
    with pytest.warns(UserWarning, match=r"FixedInterval\(5\) allows 4 frames from a keyframe.*distilled with interval 3"):
        sv.policy = FixedInterval(5)
    sv.policy = FixedInterval(3)
    sv.save(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(gen, tmp_path).distilled_interval == 3
    with pytest.warns(UserWarning, match=r"AdaptiveKeyframes.*allows 5 frames from a keyframe"):
        load(gen, tmp_path, policy=AdaptiveKeyframes(max_interval=6))
    with warnings.catch_warnings(record=True) as caught:  # calibrate's own warning gives way to the setter's
        warnings.simplefilter("always")
        calibrate(sv, _clips(n=1, t=9), keyframe_rate=1 / 3, progress=False)
    assert len([w for w in caught if "frames from a keyframe" in str(w.message)]) == 1
    with pytest.raises(ValueError, match="distilled_interval must be an integer >= 1 or None"):
        sv.distilled_interval = 0


def test_a_frame_with_non_finite_taps_forces_a_keyframe_so_later_cuts_are_still_seen():
    """A NaN pixel on a shortcut frame makes the change since the keyframe NaN, which no threshold can compare:
    that stream takes a keyframe, and the adaptive policy sees the next scene cut as it would without it."""
    import warnings

    gen, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(1e9, max_interval=8))  # no change is ever large enough
    frames = _stream(5)
    bad = frames[2].clone()
    bad[0, 0, 3, 3] = float("nan")
    keys = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in (frames[0], frames[1], bad, frames[3], frames[4]):
            sv(f)
            keys.append(sv.last_was_keyframe)
    assert keys == [True, False, True, True, False]  # the NaN frame, then a keyframe again from the NaN keyframe


def test_a_policy_class_instead_of_an_instance_is_refused_with_what_to_do():
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    with pytest.raises(TypeError, match=r"the class AdaptiveKeyframes: create one, e\.g\. AdaptiveKeyframes\(\.\.\.\)"):
        shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), policy=AdaptiveKeyframes)


class _ReadsItsBatchSize(torch.nn.Module):
    """Reads the batch size of a late feature map (a flatten per sample, as attention does); export computes
    that size once, early, and the staged programs pass it from the head to the rests."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv_in, self.enc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.mid, self.dec = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.up, self.out = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        e = F.relu(self.enc(F.relu(self.conv_in(x))))
        z = F.relu(self.up(F.relu(self.dec(F.relu(self.mid(e))))))
        flat = z.reshape(z.shape[0], -1)
        return self.out((flat - flat.mean(1, keepdim=True)).reshape(z.shape))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_sub_batches_of_an_adaptive_policy_do_not_take_sizes_from_the_whole_batch(capture):
    torch.manual_seed(0)
    gen = _ReadsItsBatchSize().eval()
    sv = shortcutify(gen, "enc", "dec", torch.randn(1, 3, 16, 16), capture=capture, policy=AdaptiveKeyframes(1e9, max_interval=6))
    x = torch.randn(4, 3, 16, 16)
    sv(x)
    sv.reset(streams=[0, 1, 2])  # a sub-batch of 3 keyframes, one of 1 takes the shortcut
    out = sv(x)
    assert sv.last_keyframes.tolist() == [True, True, True, False]
    with torch.no_grad():
        torch.testing.assert_close(out[:3], gen(x[:3]), rtol=1e-5, atol=1e-5)


def test_calibration_on_footage_where_nothing_moves_is_refused():
    _, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(0.3, max_interval=4))
    still = _clips(n=1, t=6)[0][:1].repeat(6, 1, 1, 1)
    before = sv.policy
    for target in ({"keyframe_rate": 0.5}, {"min_psnr": 30.0}):
        with pytest.raises(ValueError, match="nothing moves in these clips"):
            calibrate(sv, [still], progress=False, **target)
    assert sv.policy is before  # (before: a threshold of 1e-6 was applied, which keyframes every frame of real video)


def test_policies_are_equal_when_they_are_described_alike():
    assert FixedInterval(3) == FixedInterval(3) != FixedInterval(4)
    assert AdaptiveKeyframes(0.5, max_interval=8) == AdaptiveKeyframes(0.5, max_interval=8) != AdaptiveKeyframes(0.5)
    assert FixedInterval(3) != 3 and len({FixedInterval(3), FixedInterval(3)}) == 1


def test_an_uncalibrated_threshold_that_keyframes_nearly_every_frame_warns_once_at_the_callers_line():
    from shortcutify.core.policy import UNCALIBRATED_FRAMES

    _, sv = _resnet_sv(batch=1, policy=AdaptiveKeyframes(1e-9, max_interval=5))  # every change exceeds it
    frames = [torch.randn(1, 3, 16, 16) for _ in range(UNCALIBRATED_FRAMES + 5)]
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x in frames:
            sv(x)
    rare = [w for w in caught if "took a keyframe on" in str(w.message)]
    assert len(rare) == 1 and rare[0].filename == __file__ and "calibrate" in str(rare[0].message)
