"""Specification of the two capture paths: torch.fx symbolic tracing and torch.export.

Whatever path captured a generator, the module must run the same program as the eager
model: keyframes equal it, the cut skips the same work, and a graph that computes something
else is an error, never a silently different program.
"""

import collections
import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from generators import FourConvs, moving_clips, random_generators
from shortcutify import (
    CaptureMismatchError,
    EmptyCutError,
    InputMismatchError,
    TapOrderError,
    UnknownTapError,
    UntraceableModelError,
    distill,
    list_taps,
    load,
    shortcutify,
)
from shortcutify.core.capture import EXPORT_TOLERANCE
from shortcutify.demo.models import ResnetGenerator


class ShapeAsserting(nn.Module):
    """Checks its input's shape, as much third-party code does: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1))
        self.dec = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        assert x.shape[1] == 3, "expects RGB frames"
        h = self.enc(x)
        b, c, hh, ww = h.shape
        h = self.mid(h) + h.new_zeros(len(h.shape))[0]
        return torch.tanh(self.out(F.relu(self.dec(h))))


class IsInstanceSkip(nn.Module):
    """Takes a skip only when ``torch.jit.isinstance`` says it is a tensor: under fx a Proxy is
    not, so tracing records the other branch (as MONAI's BasicUNet does)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.dec = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        skip = self.enc(x)
        h = self.dec(self.mid(skip))
        if torch.jit.isinstance(skip, torch.Tensor):
            h = h + skip
        return self.out(h)


class ValueBranch(nn.Module):
    """Branches on a tensor's value: neither path can capture one program for it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else self.b(x)


def _resnet():
    torch.manual_seed(0)
    return ResnetGenerator(ngf=8, n_blocks=2), torch.randn(1, 3, 16, 16)


def test_a_model_fx_cannot_trace_is_captured_by_export_and_runs_exactly():
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    with pytest.raises(UntraceableModelError, match=r"(?s)torch\.fx could not trace.*capture='export'"):
        shortcutify(gen, "enc", "dec", x, capture="fx")
    sv = shortcutify(gen, "enc", "dec", x)  # capture="auto"
    assert sv.config.capture == "export"
    assert torch.equal(sv(x), gen(x)) and sv.last_was_keyframe
    out = sv(x + 0.1)
    assert out.shape == x.shape and torch.isfinite(out).all() and not sv.last_was_keyframe
    cost = sv.cost()
    assert cost.shortcut.macs < cost.teacher.macs


def test_a_graph_that_computes_something_else_is_an_error_naming_the_path_and_auto_falls_back():
    gen, x = IsInstanceSkip().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(CaptureMismatchError, match=r"(?s)fx captured.*computes something other.*capture='export'"):
        shortcutify(gen, "enc", "dec", x, capture="fx")
    sv = shortcutify(gen, "enc", "dec", x)
    assert sv.config.capture == "export"
    assert torch.equal(sv(x), gen(x))


def test_when_both_paths_fail_the_error_says_why_for_each():
    gen, x = ValueBranch(), torch.randn(1, 3, 8, 8)
    with pytest.raises(UntraceableModelError, match=r"(?s)neither capture path.*\[fx\].*\[export\]"):
        list_taps(gen, x)


def test_an_unknown_capture_path_is_refused_with_the_choices():
    gen, x = _resnet()
    with pytest.raises(ValueError, match=r"capture must be one of \('auto', 'fx', 'export'\)"):
        shortcutify(gen, "model.4", "model.12", x, capture="trace")


def test_taps_by_module_name_mean_the_same_values_on_both_paths():
    gen, x = _resnet()
    fx_taps = {m: t for t in list_taps(gen, x, capture="fx") for m in t.modules}
    ex_taps = {m: t for t in list_taps(gen, x, capture="export") for m in t.modules}
    for name in ("model.1", "model.4", "model.7", "model.10", "model.12", "model.15"):
        assert ex_taps[name].shape == fx_taps[name].shape and ex_taps[name].macs == fx_taps[name].macs, name


def test_both_paths_run_the_same_shortcut_and_skip_the_same_work():
    gen, x = _resnet()
    sf = shortcutify(gen, "model.4", "model.12", x, capture="fx")
    se = shortcutify(gen, "model.4", "model.12", x, capture="export")
    for p in sf.block.parameters():
        torch.nn.init.normal_(p, std=0.05)
    se.block.load_state_dict(sf.block.state_dict())
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        f = torch.randn(1, 3, 16, 16, generator=g)
        torch.testing.assert_close(sf(f), se(f), rtol=EXPORT_TOLERANCE, atol=EXPORT_TOLERANCE)
    assert sf.cost().shortcut.macs == se.cost().shortcut.macs
    # export's in-place ReLUs and eval-mode dropouts must not keep skipped layers alive
    ops = {str(n.target) for n in se.inference_program.graph.nodes if n.op == "call_function"}
    assert "aten.conv_transpose2d.input" in ops
    assert sum(str(n.target) == "aten.conv_transpose2d.input" for n in se.inference_program.graph.nodes) == 1


@settings(max_examples=6, deadline=None)
@given(random_generators(max_ops=5), st.data())
def test_both_paths_give_the_same_keyframes_and_skip_the_same_macs(gen_x, data):
    gen, x = gen_x
    taps = [t for t in list_taps(gen, x, capture="fx") if t.is_4d and t.modules]
    if len(taps) < 2:
        return
    i = data.draw(st.integers(0, len(taps) - 2), label="enc")
    j = data.draw(st.integers(i + 1, len(taps) - 1), label="dec")
    enc, dec = taps[i].modules[0], taps[j].modules[0]
    results = {}
    for method in ("fx", "export"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[method] = shortcutify(gen, enc, dec, x, capture=method)
        except (EmptyCutError, TapOrderError) as exc:
            results[method] = type(exc)
    sf, se = results["fx"], results["export"]
    if isinstance(sf, type) or isinstance(se, type):
        assert sf == se  # the same cut is refused the same way
        return
    k_fx, k_ex = sf.run_keyframe(x), se.run_keyframe(x)
    torch.testing.assert_close(k_ex.output, k_fx.output, rtol=EXPORT_TOLERANCE, atol=EXPORT_TOLERANCE)
    cf, ce = sf.cost(), se.cost()
    assert cf.teacher.macs - cf.floor.macs == ce.teacher.macs - ce.floor.macs


def _exported_counting_model_runs():
    """An export-captured module of :class:`ShapeAsserting` and a list that grows by one per eager model run."""
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    model_runs = []
    gen.register_forward_pre_hook(lambda m, a: model_runs.append(1))
    return gen, sv, model_runs


def test_other_input_shapes_are_captured_again_once_each_and_run_exactly():
    gen, sv, model_runs = _exported_counting_model_runs()

    def stream(shape):
        """A keyframe and a shortcut frame of ``shape``; how often the eager model ran meanwhile."""
        before = len(model_runs)
        f = torch.randn(shape)
        sv.reset()
        key = sv(f)
        short = sv(f + 0.1)
        ran = len(model_runs) - before
        with torch.no_grad():
            assert torch.equal(key, gen(f)) and short.shape == shape and torch.isfinite(short).all()
        return ran

    assert stream((2, 3, 24, 16)) > 0  # a new signature: captured (and checked against the model) again
    assert stream((2, 3, 24, 16)) == 0  # the same signature: its program is kept
    assert stream((1, 3, 16, 16)) == 0  # the example's signature: the program built at construction
    assert stream((2, 3, 24, 16)) == 0
    assert stream((1, 3, 8, 8)) > 0


def test_the_programs_of_other_signatures_are_kept_up_to_a_bound_least_recently_used_dropped(monkeypatch):
    import shortcutify.core.module as module

    monkeypatch.setattr(module, "MAX_RECAPTURED", 2)
    _, sv, model_runs = _exported_counting_model_runs()

    def captured(size):
        before = len(model_runs)
        sv(torch.randn(1, 3, size, size))
        return len(model_runs) > before

    assert [captured(s) for s in (8, 12, 8, 20)] == [True, True, False, True]  # 12 is now the least recently used
    assert [captured(s) for s in (8, 20, 12)] == [False, False, True]  # 12 was dropped: captured again
    assert len(sv._recaptured) == 2 and len(sv._runners) <= 3


class BatchBranching(ShapeAsserting):
    """Takes branches on its batch size: export's graph for one batch size must not serve the others."""

    def forward(self, x):
        if x.shape[0] % 2 == 0:
            x = x * 2
        if x.shape[0] >= 5:
            x = x + 1
        return super().forward(x)


class BatchFixing(ShapeAsserting):
    """Code for one batch size only: export specialises its graph on it."""

    def forward(self, x):
        if x.shape[0] == 2:
            x = x.flip(0)
        return super().forward(x)


@pytest.mark.parametrize("model", [ShapeAsserting, BatchBranching, BatchFixing])
def test_one_capture_serves_the_batch_sizes_its_graph_holds_for_and_each_runs_exactly(model):
    gen, x = model().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    model_runs = []
    gen.register_forward_pre_hook(lambda m, a: model_runs.append(1))
    captured = []
    for b in (2, 3, 4, 3, 6, 5, 2, 7):
        before, f = len(model_runs), torch.randn(b, 3, 16, 16)
        sv.reset()
        key, short = sv(f), sv(f + 0.1)
        captured.append(len(model_runs) > before)
        with torch.no_grad():
            assert torch.equal(key, gen(f)) and short.shape == f.shape and torch.isfinite(short).all()
    # the batch sizes a graph holds for share it (export's guards: parity and >= 5 for BatchBranching;
    # BatchFixing's graph for 2 holds for 2 alone, the one captured at 3 for every size but 2)
    expected = {
        ShapeAsserting: [True, False, False, False, False, False, False, False],
        BatchBranching: [True, True, False, False, True, True, False, False],
        BatchFixing: [True, True, False, False, False, False, False, False],
    }[model]
    assert captured == expected


class BatchLooping(ShapeAsserting):
    """Loops over its batch: every graph export makes holds for one batch size."""

    def forward(self, x):
        return super().forward(torch.cat([x[i : i + 1] / (i + 1) for i in range(x.shape[0])]))


def test_a_model_that_fixes_every_batch_size_is_not_asked_for_a_symbolic_one_again_and_again(monkeypatch):
    import shortcutify.core.module as module

    gen, x = BatchLooping().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    asked = []
    export = torch.export.export

    def recording(*args, **kwargs):
        asked.append(kwargs.get("dynamic_shapes") is not None)
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", recording)
    for b in (2, 3, 4, 5):
        f = torch.randn(b, 3, 16, 16)
        assert torch.equal(sv(f), gen(f))
    assert asked == [True] * module.MAX_BATCH_FIXED + [False] * (4 - module.MAX_BATCH_FIXED)


class BatchOfOne(ShapeAsserting):
    """Takes a branch for a batch of 1, which export settles apart from its symbolic batch sizes."""

    def forward(self, x):
        if x.shape[0] == 1:
            x = x * 3
        return super().forward(x)


def test_a_batch_of_one_never_runs_a_program_captured_for_many_batch_sizes():
    gen = BatchOfOne().eval()
    sv = shortcutify(gen, "enc", "dec", torch.randn(2, 3, 16, 16), capture="export")
    for b in (3, 1, 4):  # a symbolic capture at 3, then a batch of 1, which it must not serve
        f = torch.randn(b, 3, 16, 16)
        sv.reset()
        with torch.no_grad():
            assert torch.equal(sv(f), gen(f))


def test_a_symbolic_capture_that_fails_counts_towards_the_bound(monkeypatch):
    import shortcutify.core.capture as capture_module
    import shortcutify.core.module as module

    gen = ShapeAsserting().eval()
    sv = shortcutify(gen, "enc", "dec", torch.randn(1, 3, 16, 16), capture="export")
    export, asked = capture_module.export, []

    def failing_when_symbolic(*args, any_batch=False, **kwargs):
        asked.append(any_batch)
        if any_batch:
            raise UntraceableModelError("no symbolic batch here")
        return export(*args, **kwargs)

    monkeypatch.setattr(capture_module, "export", failing_when_symbolic)
    for b in (2, 3, 4, 5):
        f = torch.randn(b, 3, 16, 16)
        assert torch.equal(sv(f), gen(f))
    assert asked.count(True) == module.MAX_BATCH_FIXED and asked.count(False) == 4


def test_a_program_for_many_batch_sizes_counts_the_costs_of_each():
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    one = sv.cost()
    sv(torch.randn(2, 3, 16, 16))  # captured with a symbolic batch size, kept for 3
    three = sv.cost(torch.randn(3, 3, 16, 16))
    for path in ("teacher", "keyframe", "shortcut", "block", "floor"):
        assert getattr(three, path).macs == 3 * getattr(one, path).macs, path  # nothing skipped is kept alive


def test_costs_at_another_shape_or_dtype_are_counted_on_its_own_capture():
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    small, big = sv.cost(), sv.cost(torch.randn(1, 3, 32, 32))
    assert big.teacher.macs == 4 * small.teacher.macs and big.shortcut.macs > small.shortcut.macs
    sv.double()
    assert sv.cost().teacher.macs == small.teacher.macs  # captured again for float64, same MACs


class SharedBlock(nn.Module):
    """A block registered under two names (as MONAI's DynUNet registers its input block)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.skips = nn.ModuleDict({"first": self.stem})  # the same module object
        self.body, self.head = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(self.stem(x))))


@pytest.mark.parametrize("method", ["fx", "export"])
def test_a_module_registered_under_two_names_is_a_tap_by_either_on_both_paths(method):
    gen, x = SharedBlock().eval(), torch.randn(1, 3, 16, 16)
    listed = {name: t.name for t in list_taps(gen, x, capture=method) for name in t.modules}
    assert listed["stem"] == listed["skips.first"] and listed["stem.0"] == listed["skips.first.0"]
    a, b = (shortcutify(gen, enc, "body", x, capture=method) for enc in ("stem", "skips.first"))
    assert a.enc.name == b.enc.name == listed["stem"]
    with pytest.raises(UnknownTapError) as err:
        shortcutify(gen, "stem.3", "body", x, capture=method)
    assert "weight" not in str(err.value) and "bias" not in str(err.value)  # suggests taps, not the model's weights


def test_a_non_contiguous_input_gets_its_own_program():
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    f = torch.randn(1, 16, 16, 3).permute(0, 3, 1, 2)  # channels-last memory, the example's shape
    assert torch.equal(sv(f), gen(f))
    assert torch.isfinite(sv(f + 0.1)).all()


def test_a_frame_viewed_out_of_a_video_shares_the_program_of_a_fresh_frame(monkeypatch):
    """``video[:1, t]`` differs from a fresh frame only in the stride of its batch dimension of size 1, which
    reaches no element: it is not captured again."""
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    video = torch.randn(1, 5, 3, 16, 16)
    captures = []
    real = torch.export.export
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: captures.append(1) or real(*a, **k))
    for t in range(5):
        assert video[:1, t].stride(0) != x.stride(0)
        assert torch.equal(sv(video[:1, t]), sv.run_keyframe(video[:1, t]).output) or not sv.last_was_keyframe
    assert captures == [], captures


def test_a_module_captured_by_export_distils_saves_and_loads_by_the_same_path(tmp_path):
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, interval=2)
    clips = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    hist = distill(sv, clips, steps=3, batch_size=2, progress=False)
    assert len(hist.losses["total"]) == 3
    sv.save(tmp_path)
    sv2 = load(gen, tmp_path)
    assert sv2.config.capture == "export"
    for f in (x, x + 0.1, x + 0.2):
        assert torch.equal(sv(f), sv2(f))


class GradModeSwitches(nn.Module):
    """Runs its tail under ``torch.no_grad()`` or in a reentrant checkpoint (which runs it without grad), as
    inference code does: a graph that kept the switch would let no gradient out of it."""

    def __init__(self, switch: str):
        super().__init__()
        self.switch = switch
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 3, 1)

    def tail(self, h):
        return self.out(F.relu(self.up(h)))

    def forward(self, x):
        h = self.mid(self.enc(x))
        if self.switch == "no_grad":
            with torch.no_grad():
                return torch.tanh(self.tail(h))
        return torch.tanh(torch.utils.checkpoint.checkpoint(self.tail, h, use_reentrant=True))


@pytest.mark.parametrize("switch", ["no_grad", "checkpoint"])
@pytest.mark.parametrize("grad_at_capture", [True, False])
def test_grad_mode_switches_in_forward_leave_no_trace_in_an_exported_graph(switch, grad_at_capture):
    """Whatever the caller's grad mode when the module is built, the output of a shortcut frame depends on the
    block through the tail (distillation trains through it, as on fx) and the modules inside stay taps."""
    gen, x = GradModeSwitches(switch).eval(), torch.randn(1, 3, 16, 16)
    with torch.set_grad_enabled(grad_at_capture), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a reentrant checkpoint warns that no input requires grad)
        sv = shortcutify(gen, "enc", "up", x, capture="export")
    assert sv.config.capture == "export"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = sv.shortcut_step()(x + 0.1, reference=sv.run_keyframe(x).taps).output
        assert out.requires_grad
        out.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sv.block.parameters())


class DepthBySize(nn.Module):
    """Runs one body layer on frames up to 16 pixels wide, three on wider ones (a size-dependent loop count)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.body = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(3)])
        self.dec = nn.ConvTranspose2d(8, 3, 2, stride=2)

    def forward(self, x):
        h = self.enc(x)
        for layer in self.body[: 1 if x.shape[-1] <= 16 else 3]:
            h = F.relu(layer(h))
        return torch.tanh(self.dec(h))


def test_a_tap_that_a_capture_for_other_inputs_lacks_is_named_with_those_inputs():
    """The frame size, not the example, decides the loop count: the error says which inputs were captured again."""
    gen = DepthBySize().eval()
    sv = shortcutify(gen, "enc", "body.2", torch.randn(1, 3, 24, 24), capture="export")
    with torch.no_grad():
        sv(torch.randn(1, 3, 24, 24))
        with pytest.raises(UnknownTapError, match=r"inputs of shapes \[\(1, 3, 16, 16\)\].*captured again.*loop count"):
            sv(torch.randn(1, 3, 16, 16))


def test_in_place_ops_after_a_tap_leave_the_tap_values_intact_on_export():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8), nn.ReLU(inplace=True)
            self.mid, self.up, self.act2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True)
            self.out = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.out(self.act2(self.up(self.mid(self.act(self.norm(self.conv(x)))))))

    gen, x = InPlace(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "norm", "up", x, capture="export")
    out, a, f = sv.run_keyframe(x)
    torch.testing.assert_close(out, gen(x))
    assert a.min() < 0 and f.min() < 0  # the values at the taps, before the in-place ReLUs
    clones = [n for n in sv.keyframe_program.graph.nodes if n.target == "clone"]
    assert len(clones) == 2


def test_to_another_dtype_captures_again_for_it():
    gen, x = ShapeAsserting().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x, capture="export")
    sv.to(torch.float64)
    x64 = x.double()
    assert gen.enc.weight.dtype == torch.float64  # the teacher moved with the module
    assert torch.equal(sv(x64), gen(x64))
    out = sv(x64 + 0.1)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


class CastDropoutInPlace(nn.Module):
    """``.to()`` and an eval-mode dropout followed by an in-place add between the taps: export
    records guards and aliases there that must neither keep skipped layers alive nor hide a write."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.dec = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        a = self.enc(x)
        h = self.drop(a)
        h += 1.0  # writes into a through the dropout's alias (eval mode)
        h = self.mid(h).to(torch.float32)
        return self.out(self.dec(h))


def test_guards_aliases_and_writes_in_an_exported_cut_are_handled_like_fx():
    torch.manual_seed(0)
    gen, x = CastDropoutInPlace().eval(), torch.randn(1, 3, 8, 8)
    sf = shortcutify(gen, "enc", "dec", x, capture="fx")
    se = shortcutify(gen, "enc", "dec", x, capture="export")
    with torch.no_grad():
        a_true = gen.enc(x)
    for sv in (sf, se):
        key = sv.run_keyframe(x)
        torch.testing.assert_close(key.enc, a_true)  # the value at the tap, before the in-place add
    cf, ce = sf.cost(), se.cost()
    assert cf.teacher.macs - cf.floor.macs == ce.teacher.macs - ce.floor.macs > 0
    names = {str(n.target) for n in se.inference_program.graph.nodes}
    assert "aten.conv2d.default" in names and not any("_assert" in n for n in names)
    assert sum(str(n.target) == "aten.conv2d.default" for n in se.inference_program.graph.nodes) == 2  # enc and out: mid, dec skipped


class Flagged(nn.Module):
    """A fixed non-tensor argument and a shape assert: export with ``concrete_args``."""

    def __init__(self):
        super().__init__()
        self.enc, self.mid, self.dec = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x, flip=False):
        assert x.shape[1] == 3
        h = self.mid(self.enc(x.flip(-1) if flip else x))
        return self.dec(h)


def test_a_fixed_argument_keeps_its_keyword_on_export():
    gen, x = Flagged().eval(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "enc", "mid", x, capture="export", concrete_args={"flip": True})
    assert torch.equal(sv(x), gen(x, flip=True))
    assert torch.equal(sv.run_keyframe(x, flip=True).output, gen(x, flip=True))


class _Box:
    """A container registered with torch's pytree that is neither a dict, a namedtuple nor a dataclass."""

    def __init__(self, frame):
        self.frame = frame


torch.utils._pytree.register_pytree_node(_Box, lambda b: ([b.frame], None), lambda values, _: _Box(values[0]))


def test_an_output_export_cannot_rebuild_is_refused_with_what_to_do():
    class BoxOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            assert x.shape[1] == 3
            return _Box(self.b(self.a(x)))

    with pytest.raises(UntraceableModelError, match=r"returns a _Box.*tuples, lists, dicts.*return_dict"):
        list_taps(BoxOut(), torch.randn(1, 3, 8, 8), capture="export")


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_another_value_for_a_fixed_argument_is_refused_and_the_same_one_needs_no_new_capture(capture):
    from shortcutify import FixedArgumentError

    class Traceable(Flagged):  # no shape assert: fx traces it
        def forward(self, x, flip=False):
            return self.dec(self.mid(self.enc(x.flip(-1) if flip else x)))

    gen, x = (Flagged() if capture == "export" else Traceable()).eval(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "enc", "mid", x, capture=capture, concrete_args={"flip": True})
    model_runs = []
    gen.register_forward_pre_hook(lambda m, a: model_runs.append(1))
    assert torch.equal(sv(x, flip=True), gen(x, flip=True))  # the fixed value by keyword: the same program
    model_runs.clear()
    sv(x + 0.1, flip=True)
    assert model_runs == []  # no new capture for a keyword call
    with pytest.raises(FixedArgumentError, match="flip"):
        sv.run_keyframe(x, flip=False)


def test_a_generator_that_changes_its_buffers_in_forward_is_refused_and_left_as_it_was():
    """A running mean or a call counter kept in buffers would be changed by every program and every check:
    no captured program could compute what the model does. Named, and the buffers restored."""

    class Stateful(FourConvs):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))
            self.register_buffer("running", torch.zeros(1, 3, 1, 1))

        def forward(self, x):
            self.calls += 1
            self.running.mul_(0.9).add_(0.1 * x.mean((0, 2, 3), keepdim=True))
            return self.d(self.c(self.b(self.a(x - self.running))))

    gen = Stateful()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    for capture in ("auto", "fx", "export"):
        with pytest.raises(UntraceableModelError, match=r"changes its buffers \['calls', 'running'\].*restored"):
            shortcutify(gen, "a", "c", torch.rand(1, 3, 16, 16), capture=capture)
        assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before.items())


def test_buffers_that_forward_leaves_alone_are_not_taken_for_state():
    """Constant buffers holding NaN (complex too) and lazy modules capture as before."""

    class Constant(FourConvs):
        def __init__(self):
            super().__init__()
            self.register_buffer("nan", torch.tensor([float("nan"), 1.0]))
            self.register_buffer("cnan", torch.tensor([complex(float("nan"), 0.0)]))

        def forward(self, x):
            return self.d(self.c(self.b(self.a(x)))) * self.nan[1]

    shortcutify(Constant(), "a", "c", torch.rand(1, 3, 16, 16))

    lazy = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LazyBatchNorm2d(), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1))
    lazy(torch.rand(1, 3, 16, 16))  # materialised by a first call, as users do
    shortcutify(lazy.eval(), "0", "2", torch.rand(1, 3, 16, 16))


def test_an_input_read_only_for_its_shape_is_not_reported_as_unread():
    class ShapeOnly(FourConvs):
        def forward(self, x, target):
            return self.d(self.c(F.interpolate(self.b(self.a(x)), size=target.shape[-2:])))

    for capture in ("fx", "export"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sv = shortcutify(ShapeOnly(), "a", "c", (torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16)), capture=capture)
        assert sv.skipped_nodes


class FixedFrameSize(nn.Module):
    """Adds a position embedding built for 16x16 frames, as a ViT does: runs on that size only."""

    def __init__(self):
        super().__init__()
        self.enc, self.mid = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.dec, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)
        self.pos = nn.Parameter(torch.randn(1, 8, 16, 16))

    def forward(self, x):
        assert x.shape[1] == 3
        return self.out(self.dec(self.mid(self.enc(x) + self.pos)))


def test_a_frame_size_the_generator_cannot_run_is_named_as_such_not_as_a_capture_failure(capfd):
    sv = shortcutify(FixedFrameSize().eval(), "enc", "dec", torch.randn(1, 3, 16, 16), capture="export")
    capfd.readouterr()
    with pytest.raises(InputMismatchError, match=r"the generator itself fails on inputs of shape \[\(1, 3, 32, 32\)\]"):
        sv(torch.randn(1, 3, 32, 32))
    assert "fake_tensor" not in capfd.readouterr().err  # (torch's own long log of the failure is not printed)
    assert sv(torch.randn(1, 3, 16, 16)).shape == (1, 3, 16, 16)


class Modulated(nn.Module):
    """StyleGAN2's modulated conv: per-sample weights, the batch folded into the channels of a grouped conv
    (sizes such as ``b * c`` that export computes once and shares with the next module's)."""

    def __init__(self, cin, cout, styles=8):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / (cin * 9) ** 0.5)
        self.affine = nn.Linear(styles, cin)

    def forward(self, x, style):
        b, c, h, w = x.shape
        weight = self.weight[None] * (self.affine(style) + 1)[:, None, :, None, None]
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4], keepdim=True) + 1e-8)
        cout = self.weight.shape[0]
        y = F.conv2d(x.reshape(1, b * c, h, w), weight.reshape(b * cout, c, 3, 3), padding=1, groups=b)
        return y.reshape(b, cout, h, w)


class Styled(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.m1, self.m2, self.m3 = Modulated(16, 16), Modulated(16, 16), Modulated(16, 16)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x, style):
        h = F.leaky_relu(self.m1(F.leaky_relu(self.enc(x)), style))
        h = F.leaky_relu(self.m3(F.leaky_relu(self.m2(h, style)), style))
        return self.out(F.leaky_relu(self.up(h)))


def test_modules_that_read_the_batch_size_stay_taps_in_a_capture_with_a_symbolic_batch():
    torch.manual_seed(0)
    gen, styles = Styled().eval(), torch.randn(4, 8)
    x = torch.randn(4, 3, 16, 16)
    sv = shortcutify(gen, "m1", "up", (x, styles), capture="export")
    sv(x, styles)
    sv(x + 0.1, styles)
    sv.reset(streams=[1])  # sub-batches of 1 and 3: captured again, the 3 with a symbolic batch
    out = sv(x + 0.2, styles)
    with torch.no_grad():
        torch.testing.assert_close(out[1:2], gen(x[1:2] + 0.2, styles[1:2]), rtol=1e-5, atol=1e-5)
    one, three = sv.cost((x[:1], styles[:1])), sv.cost((x[:3], styles[:3]))
    assert three.shortcut.macs == 3 * one.shortcut.macs  # (the sizes the modules read keep nothing skipped alive)
    model_runs = []
    gen.register_forward_pre_hook(lambda m, a: model_runs.append(1))
    sv.reset()
    sv(x[:2], styles[:2])
    assert not model_runs  # a batch of 2 runs the program captured for 3


def test_an_output_class_the_pytree_utilities_cannot_open_is_named_with_the_fix():
    import dataclasses

    @dataclasses.dataclass
    class Frames:
        image: torch.Tensor
        feature: torch.Tensor

    class Returning(ShapeAsserting):
        def forward(self, x):
            h = self.mid(self.enc(x))
            return Frames(torch.tanh(self.out(F.relu(self.dec(h)))), h)

    with pytest.raises(UntraceableModelError, match=r"returns a Frames .*register_dataclass\(Frames\)"):
        shortcutify(Returning().eval(), "enc", "dec", torch.randn(1, 3, 16, 16), capture="fx")


def test_a_submodule_the_mac_counter_cannot_trace_is_named():
    gen = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), torch.jit.script(nn.Conv2d(8, 8, 3, padding=1)), nn.Conv2d(8, 8, 3, padding=1),
        nn.Conv2d(8, 3, 1),
    )
    with pytest.raises(UntraceableModelError, match=r"(?s)\[fx\] fvcore.s jit trace.*TorchScript or quantized ones"):
        shortcutify(gen.eval(), "0", "2", torch.randn(1, 3, 16, 16))


class StoresOnItself(nn.Module):
    """Stores on its module in forward, as SwinIR does (``self.mean = self.mean.type_as(x)``)."""

    def __init__(self, check_shape: bool):
        super().__init__()
        self.check_shape = check_shape
        self.mean = torch.full((1, 3, 1, 1), 0.5)  # a plain tensor attribute, not a buffer
        self.enc, self.mid = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.dec, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        if self.check_shape:
            assert x.shape[1] == 3  # (fx cannot trace this: auto goes on to export)
        self.mean = self.mean.type_as(x)
        return self.out(self.dec(self.mid(self.enc(x - self.mean)))) + self.mean


@pytest.mark.parametrize("check_shape, path", [(False, "fx"), (True, "export")])
def test_a_generator_that_stores_on_itself_in_forward_is_captured_and_left_as_it_was(check_shape, path):
    gen, x = StoresOnItself(check_shape).eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "enc", "dec", x)
    assert sv.config.capture == path and type(gen.mean) is torch.Tensor  # (not a proxy or a fake tensor left there)
    with torch.no_grad():
        assert torch.equal(sv(x), gen(x))


class _InPlace(FourConvs):
    """In-place ops as first-order-motion code has them: a view changed in place (``unsqueeze_``) and an
    in-place activation whose second application would change its values."""

    def forward(self, x):
        act = F.leaky_relu_
        h = act(self.c(act(self.b(act(self.a(x), 0.1)), 0.1)), 0.1)
        m = x.mean(1)
        m.unsqueeze_(1)  # [B, H, W] -> [B, 1, H, W]
        return torch.cat([self.d(h), m], 1)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_in_place_ops_are_captured_and_counted_once(capture):
    torch.manual_seed(0)
    gen, x = _InPlace().eval(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "a", "c", x, capture=capture)
    frame = torch.randn(1, 3, 16, 16)
    assert torch.equal(sv(frame), gen(frame))
    assert sv(frame).shape == (1, 4, 16, 16)  # a shortcut frame
    assert sv.cost().teacher.macs == 16 * 16 * 9 * (3 * 8 + 8 * 8 + 8 * 8 + 8 * 3)  # the four convs, once each


class _WritesIntoItsInput(FourConvs):
    def forward(self, x):
        x.mul_(2).sub_(1)  # rescales its input in place, as some preprocessing does
        return self.d(self.c(self.b(self.a(x))))


def test_a_generator_that_writes_into_its_input_leaves_the_example_and_the_kept_copy_as_given():
    from shortcutify import list_taps, suggest_taps

    torch.manual_seed(0)
    gen, x = _WritesIntoItsInput().eval(), torch.rand(1, 3, 16, 16)
    given = x.clone()
    sv = shortcutify(gen, "a", "c", x)
    sv.cost()  # (runs the teacher on the kept copy)
    list_taps(gen, x)
    suggest_taps(gen, x, top=1, progress=False)
    assert torch.equal(x, given) and torch.equal(sv.example_inputs[0], given)


class _AssignsATensor(nn.Module):
    """Assigns a plain tensor attribute in forward (what export's notice is for)."""

    def __init__(self):
        super().__init__()
        self.enc, self.mid, self.dec = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        self.scale = x.new_ones(1)
        return self.dec(torch.relu(self.mid(torch.relu(self.enc(x))))) * self.scale


def test_export_of_a_spectral_normalised_generator_raises_no_notice_and_follows_new_weights():
    """torch's notice about attributes assigned during export names the weights spectral_norm's hook assigns; the
    graph computes them from weight_orig (so it follows new weights), so the notice is dropped for them alone."""
    sn = nn.utils.spectral_norm
    x = torch.randn(1, 3, 8, 8)
    for normalised in ((0, 2, 4), (4,)):  # (torch words one attribute and several differently)
        convs = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)]
        gen = nn.Sequential(*(sn(m) if i in normalised else m for i, m in enumerate(convs))).eval()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            sv = shortcutify(gen, "1", "3", x, capture="export")
        assert not [w for w in seen if "assigned during export" in str(w.message)]
    with torch.no_grad():
        gen[4].weight_orig.mul_(2.0)  # (the last generator's one spectral-normalised layer)
    assert torch.equal(sv(x), gen(x))
    with pytest.warns(UserWarning, match=r"attribute self\.scale was assigned during export"):
        shortcutify(_AssignsATensor(), "enc", "dec", x, capture="export")


@dataclasses.dataclass
class _Output(collections.OrderedDict):
    """A dict-subclass dataclass output registered with torch's pytree, as transformers' ModelOutput and
    diffusers' BaseOutput are."""

    image: torch.Tensor = None
    features: torch.Tensor = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is not None:
                self[f.name] = getattr(self, f.name)


torch.utils._pytree.register_pytree_node(
    _Output, lambda o: (list(o.values()), list(o.keys())), lambda values, keys: _Output(**dict(zip(keys, values)))
)
_Pair = collections.namedtuple("_Pair", ["image", "features"])


@dataclasses.dataclass
class _Fields:
    image: torch.Tensor
    features: torch.Tensor
    extra: torch.Tensor | None = None


torch.utils._pytree.register_dataclass(_Fields)


class _Returns(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a, self.b, self.c, self.d = (nn.Conv2d(i, o, 3, padding=1) for i, o in ((3, 8), (8, 8), (8, 8), (8, 3)))

    def forward(self, x):
        h = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        return self.kind(image=self.d(h), features=h)


@pytest.mark.parametrize(
    "kind, method, captured", [(_Output, "auto", "export"), (_Pair, "auto", "fx"), (_Pair, "export", "export"), (_Fields, "export", "export")]
)
def test_outputs_in_model_output_dataclasses_and_namedtuples_are_rebuilt_by_export(kind, method, captured):
    """fx turns a dict subclass into a dict (refused as another output); export rebuilds it with its own type
    (and namedtuples, registered dataclasses), so that output= names their fields and streams split and merge them."""
    gen, x = _Returns(kind).eval(), torch.randn(3, 3, 16, 16)
    sv = shortcutify(gen, "a", "c", x[:1], capture=method)
    assert sv.config.capture == captured  # (fx keeps namedtuples itself)
    out = sv(x)
    assert type(out) is kind and torch.equal(out.image, gen(x).image)
    sv.reset(streams=[1])
    mixed = sv(x + 0.1)
    assert type(mixed) is kind and sv.last_keyframes.tolist() == [False, True, False]
    assert torch.allclose(mixed.image[1], gen(x[1:2] + 0.1).image[0], atol=1e-6)
    assert type(sv.run_keyframe(x).output) is kind
    distill(sv, moving_clips(2), steps=1, progress=False, output="image")


class _SeededNoise(nn.Module):
    """Adds noise drawn from a torch.Generator made and seeded on every call: the same output each call."""

    def forward(self, h):
        g = torch.Generator().manual_seed(123)
        return h + 0.5 * torch.randn(h.shape, generator=g)


class _NoisyConvs(nn.Module):
    def __init__(self, own: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
        self.noise = _SeededNoise()
        self.own = torch.Generator().manual_seed(7) if own else None

    def forward(self, x):
        h = self.b(torch.relu(self.a(x)))
        h = self.noise(h) if self.own is None else h + torch.randn(h.shape, generator=self.own)
        return self.c(torch.relu(h))


@pytest.mark.parametrize("capture", ["auto", "fx", "export"])
@pytest.mark.parametrize("own", [False, True], ids=["seeded-per-call", "generator-attribute"])
def test_a_generator_drawing_from_a_torch_generator_of_its_own_is_refused_with_the_ways_out(capture, own):
    """fx cannot generate code holding a torch.Generator; export lifts a copy of it into the graph, made while
    capturing, whose sequence then goes its own way (a generator seeded on every call agrees on the first call
    only: every keyframe after the first would differ, silently)."""
    gen = _NoisyConvs(own)
    with pytest.raises((CaptureMismatchError, UntraceableModelError), match=r"torch\.Generator.*pass it as an input.*leaf_modules"):
        shortcutify(gen, "a", "b", torch.randn(1, 3, 16, 16), capture=capture)


def test_noise_drawn_inside_a_module_kept_whole_is_the_models():
    """The remedy the error names: the module that draws the noise kept whole under fx runs eagerly, every call."""
    gen = _NoisyConvs()
    sv = shortcutify(gen, "a", "b", torch.randn(1, 3, 16, 16), capture="fx", leaf_modules=[_SeededNoise])
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        for _ in range(3):
            sv.reset()
            torch.testing.assert_close(sv(x), gen(x), rtol=0, atol=0)


class _GeneratorArgument(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x, generator=None):
        h = self.a(x)
        return self.b(h + torch.randn(h.shape, generator=generator))


@pytest.mark.parametrize("where", ["example_inputs", "concrete_args"])
def test_a_torch_generator_given_as_an_argument_is_refused_by_name(where):
    """(before: fx's "computes something other", then export's advice to fix it with concrete_args, then a SyntaxError)"""
    g, x = torch.Generator().manual_seed(0), torch.randn(1, 3, 16, 16)
    named = r"example input 1 is a torch\.Generator" if where == "example_inputs" else r"concrete_args\['generator'\] is a torch\.Generator"
    with pytest.raises(UntraceableModelError, match=named + r".*Leave the argument at None"):
        if where == "example_inputs":
            shortcutify(_GeneratorArgument(), "a", "b", (x, g))
        else:
            shortcutify(_GeneratorArgument(), "a", "b", x, concrete_args={"generator": g})


_JITTER = {"calls": 0, "on_call": None, "size": 0.0, "every_call": False}


def _jitter(h: torch.Tensor) -> torch.Tensor:
    """Stands for a kernel that is not bitwise reproducible: adds ``size`` on one chosen call (``on_call``), or a
    different tiny amount on every call (``every_call``)."""
    _JITTER["calls"] += 1
    if _JITTER["every_call"]:
        return h + _JITTER["size"] * (_JITTER["calls"] % 7) / 7
    return h + _JITTER["size"] if _JITTER["calls"] == _JITTER["on_call"] else h


torch.fx.wrap("_jitter")


class _Jittery(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.c(_jitter(self.b(self.a(x))))


def _jittered(**how):
    _JITTER.update({"calls": 0, "on_call": None, "size": 0.0, "every_call": False}, **how)
    torch.manual_seed(0)
    return _Jittery().eval(), torch.randn(1, 3, 16, 16)


def test_a_difference_that_a_second_pair_of_calls_does_not_repeat_is_the_machines_not_the_graphs():
    """(a loaded CPU's kernels are not always bitwise reproducible: the graph's first call was off by a rounding
    error once, and capture="fx" was refused)"""
    gen, x = _jittered(on_call=2, size=1e-6)  # call 1: the model; call 2: the graph, off this once
    sv = shortcutify(gen, "a", "b", x, capture="fx")
    assert sv.config.capture == "fx" and _JITTER["calls"] >= 4  # (a second pair of calls decided)
    with torch.no_grad():
        assert torch.equal(sv(x), gen(x))


def test_a_graph_within_the_models_own_call_to_call_variation_is_accepted():
    gen, x = _jittered(every_call=True, size=1e-6)
    sv = shortcutify(gen, "a", "b", x, capture="fx")
    assert sv.config.capture == "fx"


class _TinyBranch(_Jittery):
    """Adds 1e-6 in a branch that fx does not take (a Proxy is no tensor): its graph is always a little off."""

    def forward(self, x):
        h = self.c(self.b(self.a(x)))
        return h + 1e-6 if torch.jit.isinstance(h, torch.Tensor) else h


def test_a_difference_that_persists_is_refused_however_small():
    _jittered()
    with pytest.raises(CaptureMismatchError, match=r"fx captured.*computes something other.*1e-06"):
        shortcutify(_TinyBranch().eval(), "a", "b", torch.randn(1, 3, 16, 16), capture="fx")


def test_a_model_that_varies_beyond_rounding_is_not_judged_by_its_variation():
    """(e.g. one drawing Python's random numbers, which a graph would keep as constants)"""
    gen, x = _jittered(every_call=True, size=0.5)
    with pytest.raises(CaptureMismatchError, match=r"fx captured.*computes something other"):
        shortcutify(gen, "a", "b", x, capture="fx")
