"""A stateful model of the module's streams (hypothesis rule-based state machine).

One ``ShortcutV2V`` (TinyUNet, a live block with the motion prior) is driven through random sequences of
calls, resets of all or some streams, policy changes (fixed and adaptive), ``train()`` / ``eval()``,
casts between float32 and float64 (and casts to where it already is), new block weights and a new
number of streams. A naive model of each stream, built from the public pieces alone (``run_keyframe``,
``prepare_reference``, ``predict``, ``encode``, on that stream's frames alone, batch of 1), says which
streams take a keyframe and what every stream's output is; the module must agree on both
(``sv.last_keyframes``, ``sv.last_was_keyframe``, the outputs within float tolerance), and
``sv.reference`` must be ``None`` exactly when the module keeps no streams.

What the model encodes (README "How it works", "Keyframes: fixed, adaptive, per stream", "Changed in 0.20/0.21",
``ShortcutV2V``'s and ``reset``'s docstrings):

* a keyframe on the first frame, after ``reset()``, for the streams ``reset(streams=...)`` names, when the
  inputs' shape or dtype changes, after a ``.to()`` that casts (one to where the module is keeps the streams),
  after new block weights (``sv.load_state_dict`` / ``sv.block.load_state_dict``), after a policy that starts
  using the change is set (adaptive after fixed), and when the policy says so: ``FixedInterval(n)`` at ``n``
  frames since the keyframe, ``AdaptiveKeyframes`` on the encoder tap's L1 path since the keyframe over the
  keyframe tap's L1 norm (``min_interval`` / ``max_interval``);
* a keyframe's output is the teacher's; a shortcut frame's is ``predict`` against the reference taken on
  that stream's last keyframe; a stream never depends on the others;
* ``train()`` / ``eval()`` change nothing in the streams (frames are streamed without gradients, so a
  motion-prior block keeps the prior for every stream);
* a frame with a NaN pixel: a keyframe on it has non-finite taps and is taken again on the stream's next frame; an
  adaptive policy's change that is not finite forces a keyframe.

Longer hunts: ``SM_EXAMPLES=400 SM_STEPS=25`` (about a minute on 2 cores).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from generators import TinyUNet
from shortcutify import AdaptiveKeyframes, FixedInterval, shortcutify
from shortcutify.core.policy import change_since_keyframe, tap_l1

pytestmark = [
    pytest.mark.filterwarnings("ignore::shortcutify.NonFiniteKeyframeWarning"),
    pytest.mark.filterwarnings("ignore:AdaptiveKeyframes.*took a keyframe:UserWarning"),
]

SIZE = 16
MAX_STREAMS = 3
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
#: an adaptive decision this close to the threshold (relative) may go either way: batch kernels round differently
AMBIGUOUS = 1e-3

fixed_policies = st.builds(FixedInterval, st.integers(1, 4))
adaptive_policies = st.builds(
    lambda threshold, lo, hi: AdaptiveKeyframes(threshold, min_interval=lo, max_interval=max(hi, lo, 2)),
    st.sampled_from([0.02, 0.08, 0.25, 0.8]),
    st.integers(1, 3),
    st.integers(2, 5),
)
#: per stream: the same frame, about a pixel of motion, new content, or the stream's frame with one NaN pixel (once)
motions = st.lists(
    st.sampled_from(["still", "drift", "drift", "drift", "cut", "cut", "nan"]), min_size=MAX_STREAMS, max_size=MAX_STREAMS
)
policies = st.one_of(fixed_policies, adaptive_policies)
#: frames: per stream motion, a seed, the streams reset (by index) just before the frame, and a policy set just before
#: it (mostly none)
clip = st.lists(
    st.tuples(
        motions,
        st.integers(0, 2**16),
        st.one_of(st.just([]), st.lists(st.integers(0, MAX_STREAMS - 1), max_size=2)),
        st.one_of(st.none(), st.none(), st.none(), policies),
    ),
    min_size=1,
    max_size=5,
)


def _live_block(sv, seed: int) -> dict[str, torch.Tensor]:
    """Random non-zero weights for every block parameter (flows, offsets, masks and corrections act)."""
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype) for k, v in sv.block.state_dict().items()}


def _texture(g: torch.Generator) -> torch.Tensor:
    """A smooth random frame ``[1, 3, SIZE, SIZE]`` (float64)."""
    small = torch.rand(1, 3, SIZE // 4, SIZE // 4, generator=g, dtype=torch.float64) * 2 - 1
    return F.interpolate(small, size=SIZE, mode="bilinear", align_corners=False)


class _Stream:
    """What the model knows of one stream."""

    def __init__(self) -> None:
        self.since = 0  # frames since the keyframe
        self.stale = False  # reset by reset(streams=...): a keyframe on the next call
        self.reference = None  # prepared from this stream's keyframe alone
        self.previous = None  # adaptive: the last frame's encoder tap [1, ...]
        self.travelled = None  # adaptive: [1] float32, the L1 path since the keyframe
        self.norm = None  # adaptive: [1] float32, the keyframe tap's L1 norm
        self.pending = None  # adaptive: (tap, path) of this frame, kept if it is a shortcut frame


_BUILT: list = []


def _module():
    """The generator and its module, as built (float32, eval mode, FixedInterval(3), no streams, block weights of
    seed 0). Built once and put back so for every example: building takes most of an example's time, and shrinking
    a failure runs hundreds of examples (a state that outlived all this would show as a flaky failure)."""
    if not _BUILT:
        torch.manual_seed(0)
        gen = TinyUNet()
        example = torch.randn(MAX_STREAMS, 3, SIZE, SIZE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sv = shortcutify(gen, "relu_1", "relu_3", example, motion_prior=True)
        _BUILT.extend([gen, sv])
    gen, sv = _BUILT
    sv.float()
    sv.train(False)
    sv.policy = FixedInterval(3)
    sv.block.load_state_dict(_live_block(sv, 0))  # ends the streams
    sv.reset()
    assert sv.reference is None and not gen.training and next(gen.parameters()).dtype == torch.float32
    return gen, sv


class StreamsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # one thread: 16x16 frames gain nothing from more, and on a busy 2-core machine OpenMP's waits for a
        # second thread made each conv several hundred times slower (restored in teardown)
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.gen, self.sv = _module()
        self.policy = self.sv.policy  # FixedInterval(3)
        self.dtype = torch.float32
        self.n = MAX_STREAMS  # streams of the next call
        self.has_state = False  # the module keeps streams (sv.reference is not None)
        self.signature = None  # (streams, dtype) of the call the module's streams were started on
        self.tracking = False  # the module keeps the change since the keyframe up to date
        self.streams: list[_Stream] = []
        self.frames: list[torch.Tensor] = []  # each stream's current frame, float64 [1, 3, SIZE, SIZE]
        self.calls = 0

    @initialize(seed=st.integers(0, 2**16), policy=policies)
    def start(self, seed: int, policy) -> None:
        g = torch.Generator().manual_seed(seed)
        self.frames = [_texture(g) for _ in range(MAX_STREAMS)]
        self.sv.policy = self.policy = policy

    # ------------------------------------------------------------------ the model's pieces
    def _keyframe(self, s: _Stream, x: torch.Tensor) -> torch.Tensor:
        key = self.sv.run_keyframe(x)
        s.since = 0
        # a keyframe whose taps are not finite is taken again on the stream's next frame (README "Per-stream keyframes")
        s.stale = not (bool(key.enc.isfinite().all()) and bool(key.dec.isfinite().all()))
        s.reference = self.sv.prepare_reference(key)
        if getattr(self.policy, "uses_change", False):
            s.previous, s.travelled, s.norm = key.enc.clone(), torch.zeros(1), tap_l1(key.enc)
        else:
            s.previous = s.travelled = s.norm = None
        return key.output

    def _frames(self, kinds: list[str], seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        for i, kind in enumerate(kinds):
            if kind == "cut":
                self.frames[i] = _texture(g)
            elif kind == "drift":  # about a pixel of motion and a little noise
                dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
                moved = torch.roll(self.frames[i], shifts=(dy, dx), dims=(2, 3))
                self.frames[i] = moved + 0.01 * torch.randn(moved.shape, generator=g, dtype=torch.float64)
        x = torch.cat(self.frames[: self.n]).to(self.dtype)
        for i, kind in enumerate(kinds[: self.n]):
            if kind == "nan":  # this frame only: the stream goes on from its frame afterwards
                y, z = (int(v) for v in torch.randint(0, SIZE, (2,), generator=g))
                x[i, 0, y, z] = float("nan")
        return x

    # ------------------------------------------------------------------ rules
    # frames are most of a stream's life: four rules of 1 to 5 frames each (hypothesis picks rules uniformly)
    @rule(frames=clip)
    def frames_a(self, frames: list) -> None:
        self.clip(frames)

    @rule(frames=clip)
    def frames_b(self, frames: list) -> None:
        self.clip(frames)

    @rule(frames=clip)
    def frames_c(self, frames: list) -> None:
        self.clip(frames)

    @rule(frames=clip)
    def frames_d(self, frames: list) -> None:
        self.clip(frames)

    def clip(self, frames: list) -> None:
        for kinds, seed, resets, policy in frames:
            if policy is not None:
                self.set_policy(policy)
            if self.has_state:
                resets = [i for i in resets if i < len(self.streams)]
                self.sv.reset(streams=resets)
                for i in resets:
                    self.streams[i].stale = True
            self.frame(kinds, seed)

    def frame(self, kinds: list[str], seed: int) -> None:
        x = self._frames(kinds, seed)
        n, sv, adaptive = self.n, self.sv, bool(getattr(self.policy, "uses_change", False))
        out = sv(x)
        self.calls += 1
        got = sv.last_keyframes.tolist()
        with torch.no_grad():
            fresh = not self.has_state or self.signature != (n, self.dtype) or (adaptive and not self.tracking)
            if fresh:
                self.streams = [_Stream() for _ in range(n)]
                key = [True] * n
            else:
                assert len(self.streams) == n
                key = []
                for i, s in enumerate(self.streams):
                    since = s.since + 1
                    if isinstance(self.policy, FixedInterval):
                        wants = since >= self.policy.n
                    else:
                        p = self.policy
                        current = sv.encode(x[i : i + 1])
                        travelled = s.travelled + tap_l1(current - s.previous)
                        change = float(change_since_keyframe(travelled, s.norm)[0])
                        free = p.min_interval <= since < p.max_interval
                        # a change that is not finite (a NaN frame) forces a keyframe (README, "Changed in 0.20")
                        wants = since >= p.max_interval or (free and change > p.threshold) or not math.isfinite(change)
                        if free and abs(change - p.threshold) <= AMBIGUOUS * p.threshold:
                            event("adaptive decision at the threshold: the module's taken")
                            wants = got[i]
                        s.pending = (current, travelled)
                    key.append(bool(wants or s.stale))
                if all(key):  # every stream takes a keyframe: the module starts them all again
                    self.streams = [_Stream() for _ in range(n)]
            note(f"call {self.calls}: policy {self.policy!r}, {self.dtype}, {n} streams, expected keyframes {key}, got {got}")
            assert got == key, f"keyframes {got}, the model says {key} (policy {self.policy!r})"
            assert sv.last_was_keyframe == all(key)
            assert out.shape == (n, 3, SIZE, SIZE) and out.dtype == self.dtype
            if all(key):  # a keyframe of the whole batch is the teacher's output on it
                torch.testing.assert_close(out, self.gen(x), rtol=0, atol=0, equal_nan=True)
            tol = TOLERANCE[self.dtype]
            for i, s in enumerate(self.streams):
                xi = x[i : i + 1]
                if key[i]:
                    want = self._keyframe(s, xi)
                    teacher = self.gen(xi)
                    torch.testing.assert_close(want, teacher, rtol=0, atol=tol, equal_nan=True)  # the keyframe program is the teacher
                else:
                    want = sv.predict(xi, reference=s.reference)
                    s.since += 1
                    if adaptive:
                        s.previous, s.travelled = s.pending
                torch.testing.assert_close(
                    out[i : i + 1], want, rtol=tol, atol=tol, equal_nan=True,
                    msg=lambda m, i=i, k=key[i]: f"stream {i} ({'keyframe' if k else 'shortcut'}): {m}",
                )
        if sum(key) and not all(key):
            event("mixed batch")
        self.has_state, self.signature, self.tracking = True, (n, self.dtype), adaptive

    @rule()
    def reset_all(self) -> None:
        self.sv.reset()
        self.has_state = False

    @rule(data=st.data(), as_mask=st.booleans())
    def reset_some(self, data: st.DataObject, as_mask: bool) -> None:
        if not self.has_state:  # no batch yet: indices are not checked against one, and nothing changes
            self.sv.reset(streams=data.draw(st.lists(st.integers(-8, 8), max_size=3), label="streams (none kept)"))
            return
        n = len(self.streams)
        chosen = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n), label="streams")
        if as_mask:
            mask = torch.zeros(n, dtype=torch.bool)
            mask[chosen] = True
            self.sv.reset(streams=mask)
        else:  # indices, some written from the end
            negative = data.draw(st.booleans(), label="negative indices")
            self.sv.reset(streams=[i - n if negative else i for i in chosen])
        for i in chosen:
            self.streams[i].stale = True

    @rule(policy=policies)
    def set_policy(self, policy) -> None:
        both = getattr(self.policy, "uses_change", False) and getattr(policy, "uses_change", False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.sv.policy = policy
        self.tracking = self.tracking and both
        self.policy = policy

    @rule(training=st.booleans())
    def train_or_eval(self, training: bool) -> None:
        self.sv.train(training)
        assert self.sv.block.training == training and not self.gen.training

    @rule(dtype=st.sampled_from([torch.float32, torch.float64]))
    def cast(self, dtype: torch.dtype) -> None:
        self.sv.double() if dtype == torch.float64 else self.sv.float()
        if dtype != self.dtype:  # cast: new streams (to where it already is keeps them)
            self.has_state = False
            self.dtype = dtype
        assert next(self.sv.block.parameters()).dtype == dtype
        assert next(self.gen.parameters()).dtype == dtype

    @rule(seed=st.integers(1, 2**16), whole_module=st.booleans())
    def new_block_weights(self, seed: int, whole_module: bool) -> None:
        weights = _live_block(self.sv, seed)
        if whole_module:
            self.sv.load_state_dict({f"block.{k}": v for k, v in weights.items()})
        else:
            self.sv.block.load_state_dict(weights)
        self.has_state = False

    @rule(n=st.integers(1, MAX_STREAMS))
    def stream_count(self, n: int) -> None:
        self.n = n  # the next call has another batch size (a keyframe for all, if it differs)

    def teardown(self) -> None:
        torch.set_num_threads(self.threads)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def reference_kept_exactly_while_streams_are(self) -> None:
        ref = self.sv.reference
        assert (ref is None) == (not self.has_state)
        if ref is not None:
            assert all(t.shape[0] == len(self.streams) for t in ref)
            assert ref[0].dtype == self.dtype  # (the motion prior's features are float32 in any dtype)


StreamsMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SM_EXAMPLES", 25)),
    stateful_step_count=int(os.environ.get("SM_STEPS", 12)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_streams_follow_the_per_stream_model = StreamsMachine.TestCase

