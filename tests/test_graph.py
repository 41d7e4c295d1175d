"""Specification of tap naming, graph splitting and the errors for bad taps or models."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hypothesis import given, settings

from generators import TinyUNet, TwoInputGen, random_generators
from shortcutify import (
    FixedArgumentError,
    AmbiguousTapError,
    EmptyCutError,
    IncompatibleCheckpointError,
    ShortcutifyError,
    TapOrderError,
    TapShapeError,
    UnknownTapError,
    UntraceableModelError,
    TapList,
    list_taps,
    shortcutify,
)
from shortcutify.demo.models import ResnetGenerator, resnet_taps


@pytest.fixture
def resnet():
    return ResnetGenerator(ngf=8, n_blocks=2), torch.randn(1, 3, 16, 16)


def test_list_taps_names_shapes_and_cumulative_macs(resnet):
    gen, x = resnet
    taps = list_taps(gen, x)
    names = [t.name for t in taps]
    assert names[:2] == ["model_0", "model_1"]
    by_module = {m: t for t in taps for m in t.modules}
    assert by_module["model.4"].shape == (1, 16, 8, 8)
    assert by_module["model.4"].op == "Conv2d"
    assert by_module["model.10"].op == "add"  # a residual block's output is its add node
    macs = [t.macs for t in taps]
    assert macs == sorted(macs)  # a chain: each node costs at least what its input costs
    assert macs[-1] > macs[0] > 0 or macs[0] == 0
    table = str(taps)
    assert "model.4" in table and "MACs up to it" in table and "8x8" in table
    assert repr(taps) == table  # (a REPL shows the table)
    head = taps[:3]
    assert type(head) is TapList and [t.name for t in head] == names[:3] and str(head).count("\n") == 3 + 1
    assert taps[0] is not None and not isinstance(taps[0], TapList)


@settings(max_examples=25, deadline=None)
@given(random_generators(max_ops=9))
def test_macs_up_to_a_node_count_each_ancestor_once_as_a_walk_over_its_ancestors_does(gen_x):
    """The one-pass count (bit masks of costly ancestors, summed by byte tables) equals the naive sum over
    each node's ancestors on arbitrary generators, residual and concatenated branches (diamonds) included."""
    from shortcutify.core.capture import capture
    from shortcutify.core.taps import ancestors, macs_up_to, tap_info, tap_infos

    gen, x = gen_x
    captured = capture(gen.eval(), x)
    fast = macs_up_to(captured)
    for n in captured.gm.graph.nodes:
        assert fast[n] == sum(captured.macs.get(a.name, 0) for a in ancestors(n)), n.name
    for t in tap_infos(captured):
        assert t == tap_info(captured, captured.node(t.name))


def test_macs_up_to_count_a_node_reached_by_many_paths_once_past_a_byte_of_costly_nodes():
    from shortcutify.core.capture import capture
    from shortcutify.core.taps import ancestors, macs_up_to

    class Wide(nn.Module):  # 12 costly convs (more than one byte of the mask), each read by two later sums
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([nn.Conv2d(3, 3, 3, padding=1) for _ in range(12)])

        def forward(self, x):
            outs = [c(x) for c in self.convs]
            total = outs[0]
            for o in outs[1:]:
                total = total + o + o * 2
            return total

    captured = capture(Wide().eval(), torch.randn(1, 3, 8, 8))
    fast = macs_up_to(captured)
    output = next(n for n in captured.gm.graph.nodes if n.op == "output")
    assert fast[output] == sum(captured.macs.values()) == sum(captured.macs.get(a.name, 0) for a in ancestors(output))


class _ScaledByMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x) * x.mean())


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_list_taps_prints_a_zero_dim_value_with_an_empty_shape(capture):
    """A scalar tensor (here ``x.mean()``) is listed, not a tap (not 4-D), and its shape column reads ``()``."""
    taps = list_taps(_ScaledByMean(), torch.randn(1, 3, 8, 8), capture=capture)
    (mean,) = [t for t in taps if t.shape == ()]
    assert not mean.is_4d
    row = next(line for line in str(taps).splitlines() if line.startswith(mean.name + " "))
    assert row.split()[-2] == "()"


def test_list_taps_leaves_a_model_in_training_mode_unchanged():
    """Its normalisation statistics are not updated by the capture's runs; its modes are given back."""
    gen = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).train()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    for capture in ("fx", "export"):
        list_taps(gen, torch.randn(2, 3, 8, 8), capture=capture)
    assert all(torch.equal(v, before[k]) for k, v in gen.state_dict().items())
    assert all(m.training for m in gen.modules())


def test_node_name_and_module_name_denote_the_same_tap(resnet):
    gen, x = resnet
    a = shortcutify(gen, "model.4", "model.12", x)
    b = shortcutify(gen, "model_4", "model_12", x)
    assert a.enc.name == b.enc.name == "model_4"
    assert a.skipped_nodes == b.skipped_nodes


def test_unknown_tap_suggests_close_names_and_list_taps(resnet):
    gen, x = resnet
    with pytest.raises(UnknownTapError) as e:
        shortcutify(gen, "model.44", "model.12", x)
    msg = str(e.value)
    assert "model.44" in msg and "model.4" in msg and "list_taps" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, ShortcutifyError)


@pytest.mark.parametrize("wrap", [nn.DataParallel, torch.compile], ids=["DataParallel", "torch.compile"])
def test_taps_named_inside_the_generator_are_found_under_a_wrapper(resnet, wrap):
    """DataParallel/DDP keep the generator as ``module``, torch.compile as ``_orig_mod``: the generator's own
    module names still denote its taps; the wrapper's full names too."""
    gen, x = resnet
    gen.eval()
    plain = shortcutify(gen, "model.4", "model.12", x)
    wrapped = wrap(gen)
    prefix = "module." if isinstance(wrapped, nn.DataParallel) else "_orig_mod."
    for enc, dec in (("model.4", "model.12"), (prefix + "model.4", prefix + "model.12")):
        sv = shortcutify(wrapped, enc, dec, x)
        assert (sv.enc.shape, sv.dec.shape) == (plain.enc.shape, plain.dec.shape)
        with torch.no_grad():
            assert torch.allclose(sv(x), gen(x), atol=1e-6)
    with pytest.raises(UnknownTapError, match=r"model\.44"):
        shortcutify(wrapped, "model.44", "model.12", x)


def test_module_called_twice_asks_for_a_node_name():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.shared = nn.Conv2d(8, 8, 3, padding=1)
            self.out = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.out(self.shared(F.relu(self.shared(self.a(x)))))

    with pytest.raises(AmbiguousTapError, match=r"called 2 times.*\['shared', 'shared_1'\]"):
        shortcutify(Twice(), "a", "shared", torch.randn(1, 3, 8, 8))
    sv = shortcutify(Twice(), "a", "shared_1", torch.randn(1, 3, 8, 8))
    assert sv.dec.name == "shared_1"


def test_swapped_taps_are_reported(resnet):
    gen, x = resnet
    with pytest.raises(TapOrderError, match="swap"):
        shortcutify(gen, "model.12", "model.4", x)


def test_decoder_tap_on_a_parallel_branch_is_reported():
    gen = TwoInputGen()
    ex = (torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8))
    with pytest.raises(TapOrderError, match="does not depend"):
        shortcutify(gen, "enc_label", "mask_head", ex)


def test_same_tap_twice_is_reported(resnet):
    gen, x = resnet
    with pytest.raises(TapOrderError, match="same value"):
        shortcutify(gen, "model.4", "model_4", x)


def test_non_4d_tap_is_reported():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 4 * 8 * 8)

        def forward(self, x):
            h = self.fc(torch.flatten(self.conv(x), 1))
            return h.view(-1, 4, 8, 8)

    with pytest.raises(TapShapeError, match=r"\(1, 256\).*4-D"):
        shortcutify(Flat(), "conv", "fc", torch.randn(1, 3, 8, 8))


def test_cut_that_skips_no_multiply_adds_is_reported():
    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU()
            self.out = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            return self.out(self.act(self.conv(x)))

    with pytest.raises(EmptyCutError, match="skips no multiply-adds"):
        shortcutify(G(), "conv", "act", torch.randn(1, 3, 8, 8))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = Gate()
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = self.gate(self.conv(x))
        return self.out(self.mid(h))


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent control flow: untraceable
            return x
        return -x


def test_untraceable_model_names_the_line_and_the_remedies():
    with pytest.raises(UntraceableModelError) as e:
        shortcutify(DataDependent(), "conv", "mid", torch.randn(1, 3, 8, 8))
    msg = str(e.value)
    assert "if x.mean() > 0" in msg and "test_graph.py" in msg
    assert "leaf_modules" in msg and "autowrap_functions" in msg and "concrete_args" in msg


def test_leaf_modules_remedy_makes_it_traceable():
    gen = DataDependent()
    x = torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "gate", "mid", x, leaf_modules=[Gate])
    assert torch.equal(sv(x), gen(x))
    sv2 = shortcutify(gen, "gate", "mid", x, leaf_modules=["gate"])
    assert torch.equal(sv2(x), gen(x))


class _GateBase(nn.Module):
    """A base class of gates: ``leaf_modules=[_GateBase]`` keeps every subclass opaque."""


class _SubGate(_GateBase):
    def forward(self, x):
        if x.mean() > 0:
            return x
        return -x


class _SubGated(DataDependent):
    def __init__(self):
        super().__init__()
        self.gate = _SubGate()


@pytest.mark.parametrize("leaves", [[Gate], ["gate"], [_GateBase]], ids=["class", "name", "base-class"])
def test_a_saved_block_keeps_the_leaf_modules_it_was_captured_with(tmp_path, leaves):
    """``load()`` without ``leaf_modules`` captures as the block was captured (before 0.22 it failed to trace);
    classes are found among the generator's own modules, nothing is imported."""
    import json

    from shortcutify import load

    gen = _SubGated() if leaves == [_GateBase] else DataDependent()
    x = torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "gate", "mid", x, leaf_modules=leaves)
    sv.save(tmp_path / "b")
    stored = json.loads((tmp_path / "b" / "shortcut_config.json").read_text())["leaf_modules"]
    assert stored == [v if isinstance(v, str) else f"class:{v.__module__}.{v.__qualname__}" for v in leaves]
    loaded = load(gen, tmp_path / "b")
    with torch.no_grad():
        assert torch.equal(loaded(x), gen(x))

    class Other(nn.Module):  # the saved class nowhere in the generator: named, and the capture says the rest
        def __init__(self):
            super().__init__()
            self.conv, self.gate, self.mid, self.out = gen.conv, nn.Identity(), gen.mid, gen.out

        def forward(self, x):
            return self.out(self.mid(self.gate(self.conv(x))))

    if leaves == [Gate]:
        with pytest.warns(UserWarning, match=r"leaf_modules holding the classes \[.*Gate'\].*no module of this Other"):
            with pytest.raises(IncompatibleCheckpointError):
                load(Other(), tmp_path / "b")


def test_unet_skip_from_the_encoder_stays_in_the_shortcut_program():
    gen = TinyUNet()
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "down", "up", x)
    code = sv.shortcut_program.code
    # the skip `s = relu(inc(x))` is needed by the tail: it is computed; the bottleneck is not
    assert "self.inc(" in code and "self.fuse(" in code
    assert "self.mid1(" not in code and "self.mid2(" not in code and "self.up(" not in code
    assert set(sv.skipped_nodes) >= {"mid1", "mid2", "up"}
    assert "inc" not in sv.skipped_nodes


def test_side_branch_and_extra_inputs_pass_through_with_dict_outputs():
    gen = TwoInputGen()
    label, prev = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8)
    sv = shortcutify(gen, "down", "up", (label, prev))
    code = sv.shortcut_program.code
    assert "self.mask_head(" in code and "self.enc_prev(" in code  # the tail needs them
    assert "self.res(" not in code
    out0 = sv(label, prev)
    ref = gen(label, prev)
    assert out0.keys() == ref.keys() and all(torch.equal(out0[k], ref[k]) for k in ref)
    out1 = sv(label, prev + 0.1)
    assert not sv.last_was_keyframe
    assert out1["frame"].shape == ref["frame"].shape
    # the side branch is computed exactly on shortcut frames
    assert torch.equal(out1["mask"], gen(label, prev + 0.1)["mask"])


def test_tuple_outputs_pass_through():
    class T(ResnetGenerator):
        def forward(self, x):
            y = self.model(x)
            return y, y.mean()

    gen = T(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "model.4", "model.12", x)
    y, m = sv(x)
    assert torch.equal(y, gen(x)[0]) and torch.equal(m, gen(x)[1])
    y1, m1 = sv(x)
    assert y1.shape == y.shape and m1.shape == m.shape


def test_paper_taps_of_the_resnet_generator():
    gen = ResnetGenerator(ngf=8, n_blocks=6)
    assert resnet_taps(gen) == ("model.4", "model.16")
    assert isinstance(gen.model[4], nn.Conv2d) and gen.model[4].stride == (2, 2)
    assert isinstance(gen.model[16], nn.ConvTranspose2d)


def test_concrete_args_fix_a_control_flow_argument():
    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.c, self.o = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
            self.extra = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x, flip=False):
            h = self.a(x)
            if flip:
                h = self.extra(-h)
            return self.o(self.c(F.relu(self.b(h))))

    gen, x = Flip(), torch.randn(1, 3, 8, 8)
    # a default the example inputs do not give is fixed to its default, and checked on every call
    by_default = shortcutify(gen, "a", "c", x, capture="fx")
    assert torch.equal(by_default(x), gen(x))
    with pytest.raises(FixedArgumentError, match="flip"):
        by_default.run_keyframe(x, flip=True)
    sv = shortcutify(gen, "a", "c", x, concrete_args={"flip": True})
    assert sv.config.capture == "fx"
    assert torch.equal(sv(x), gen(x, True))
    sv(x + 0.1)
    assert not sv.last_was_keyframe
    sv(x + 0.2, flip=True)  # the fixed argument may still be passed, by keyword too
    assert sv.last_was_keyframe  # (a change of the call's arguments starts a keyframe)
    sv(x + 0.3, flip=True)
    assert not sv.last_was_keyframe
    from shortcutify.core.cost import count_macs

    # the teacher is counted on the branch the programs were traced on
    assert sv.cost().teacher.macs == count_macs(gen, x, flip=True)[0] != count_macs(gen, x)[0]


def sign_gate(t):
    return t if t.mean() > 0 else -t  # untraceable unless wrapped


def test_tracer_kwargs_autowrap_a_free_function():
    class W(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.o = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            return self.o(self.b(sign_gate(self.a(x))))

    gen, x = W(), torch.randn(1, 3, 8, 8)
    with pytest.raises(UntraceableModelError, match="t.mean"):
        shortcutify(gen, "a", "b", x)
    sv = shortcutify(gen, "a", "b", x, tracer_kwargs={"autowrap_functions": (sign_gate,)})
    assert torch.equal(sv(x), gen(x))


def test_an_in_place_op_after_a_tap_does_not_change_the_reference():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.norm = nn.InstanceNorm2d(8)
            self.act = nn.ReLU(inplace=True)
            self.mid = nn.Conv2d(8, 8, 3, padding=1)
            self.up = nn.Conv2d(8, 8, 3, padding=1)
            self.act2 = nn.ReLU(inplace=True)
            self.out = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.out(self.act2(self.up(self.mid(self.act(self.norm(self.conv(x)))))))

    gen, x = InPlace(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "norm", "up", x)
    out, a, f = sv.run_keyframe(x)
    assert torch.equal(out, gen(x))
    assert a.min() < 0 and f.min() < 0  # the values at the taps, before the in-place ReLUs
    seen = {}
    sv.block.register_forward_hook(lambda m, i, o: seen.update(a=i[0].clone()))
    _, f_hat, _ = sv.run_shortcut(x, reference=sv.block.prepare_reference(a, f))
    assert torch.equal(seen["a"], a)  # the block sees the same encoder feature as the keyframe


class _AfterTap(nn.Module):
    """conv -> norm (tap "a") -> <after> -> mid -> up (tap "f") -> <after> -> out."""

    def __init__(self, after):
        super().__init__()
        self.after = after
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(8)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        a = self.norm(self.conv(x))
        f = self.up(self.mid(self.after(self, a)))
        return self.out(self.after(self, f))


def _relu_inplace_method(m, x):
    return x.relu_()


def _relu_functional_inplace(m, x):
    return F.relu(x, inplace=True)


def _relu_on_a_view(m, x):
    x.view(x.shape[0], -1).clamp_(min=0)
    return x


def _relu_after_a_no_op_cast(m, x):
    return x.to(torch.float32).relu_()  # .to() to the same dtype returns x itself


def _augmented_assignment(m, x):
    x += 1.0
    return x


def _out_of_place(m, x):
    return F.relu(x) + torch.sigmoid(x.view(x.shape)) * 2


@pytest.mark.parametrize(
    "after, mutates",
    [
        (_relu_inplace_method, True),
        (_relu_functional_inplace, True),
        (_relu_on_a_view, True),
        (_relu_after_a_no_op_cast, True),
        (_augmented_assignment, False),  # fx records `x += 1` as an out-of-place add
        (_out_of_place, False),
    ],
)
def test_tap_values_are_copied_exactly_when_a_later_op_may_write_into_them(after, mutates):
    torch.manual_seed(0)
    gen, x = _AfterTap(after), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "norm", "up", x)
    out, a, f = sv.run_keyframe(x)
    torch.testing.assert_close(out, gen(x))
    with torch.no_grad():
        a_true = gen.norm(gen.conv(x))
        f_true = gen.up(gen.mid(after(gen, a_true.clone())))
    torch.testing.assert_close(a, a_true)  # the values at the taps, before any in-place op
    torch.testing.assert_close(f, f_true)
    clones = [n for n in sv.keyframe_program.graph.nodes if n.target == "clone"]
    assert len(clones) == (2 if mutates else 0)  # no copy (time, memory) when nothing can write into a tap
    _, f_hat, _ = sv.run_shortcut(x, reference=sv.block.prepare_reference(a, f))
    torch.testing.assert_close(f_hat, f)  # untrained block: the reference feature, as returned for the losses


class _Aliased(nn.Module):
    """conv (tap) -> <alias> -> ReLU(inplace=True): the in-place op reaches the tap through an alias."""

    def __init__(self, alias):
        super().__init__()
        self.conv, self.alias, self.act = nn.Conv2d(3, 8, 3, padding=1), alias, nn.ReLU(inplace=True)
        self.mid, self.up, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.out(self.up(self.mid(self.act(self.alias(self.conv(x))))))


class _Swap(nn.Module):
    def forward(self, x):
        return x.swapaxes(2, 3).swapaxes(2, 3)


@pytest.mark.parametrize("alias", [nn.Identity(), nn.Dropout(0.5), _Swap()], ids=["Identity", "Dropout-eval", "swapaxes"])
def test_an_in_place_op_reaching_a_tap_through_an_alias_does_not_change_it(alias):
    torch.manual_seed(0)
    gen, x = _Aliased(alias).eval(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "conv", "up", x)
    _, a, _ = sv.run_keyframe(x)
    torch.testing.assert_close(a, gen.conv(x))
    assert a.min() < 0  # before the ReLU


def test_an_unused_in_place_op_on_a_view_of_a_live_value_survives_dead_code_elimination():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.mid, self.up, self.out = (nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                                      nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1))

        def forward(self, x):
            f = self.up(self.mid(self.conv(x)))
            f.view(f.shape[0], -1).clamp_(min=0)  # result unused: only its effect on f matters
            return self.out(f)

    torch.manual_seed(0)
    gen, x = Net(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "conv", "up", x)
    _, a, f = sv.run_keyframe(x)
    ref = sv.block.prepare_reference(a, f)
    with torch.no_grad():
        expected = gen(x)
        assert f.min() < 0  # the tap, before the clamp
        torch.testing.assert_close(sv.predict(x, reference=ref), expected)  # untrained block: f_hat == f
        torch.testing.assert_close(sv.run_shortcut(x, reference=ref)[0], expected)


def test_the_reference_state_does_not_share_memory_with_the_keyframe_output():
    class Flat(nn.Module):  # the decoder tap is (a view of) the output
        def __init__(self):
            super().__init__()
            self.conv, self.mid, self.up = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

        def forward(self, x):
            f = self.up(self.mid(self.conv(x.contiguous(memory_format=torch.channels_last))))  # channels-last
            return f.view(f.shape)  # the output is a view of the decoder tap

    gen, x = Flat(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "conv", "up", x)
    out = sv(x)
    before = sv.reference.feature.clone()
    out.mul_(0.5).add_(0.5)  # what users do to outputs
    assert torch.equal(sv.reference.feature, before)


def test_a_users_opaque_leaf_module_after_a_tap_counts_as_writing_into_it():
    class Opaque(nn.Module):  # a leaf: fx cannot see what it does to its input
        def forward(self, x):
            return x.mul_(2.0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.opaque = nn.Conv2d(3, 8, 3, padding=1), Opaque()
            self.mid, self.up, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.out(self.up(self.mid(self.opaque(self.conv(x)))))

    gen, x = Net(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "conv", "up", x, leaf_modules=(Opaque,))
    _, a, _ = sv.run_keyframe(x)
    torch.testing.assert_close(a, gen.conv(x))


def test_a_leaf_container_after_a_tap_counts_as_writing_into_it():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.seq = nn.Sequential(nn.LeakyReLU(0.2, True), nn.Conv2d(8, 8, 3, padding=1))  # pix2pix-style
            self.up, self.out = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

        def forward(self, x):
            return self.out(self.up(self.seq(self.conv(x))))

    gen, x = Net(), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "conv", "up", x, leaf_modules=["seq"])
    _, a, _ = sv.run_keyframe(x)
    torch.testing.assert_close(a, gen.conv(x))


def test_a_model_input_is_not_a_tap():
    gen = TwoInputGen()
    with pytest.raises(TapOrderError, match="input of the model"):
        shortcutify(gen, "prev", "up", (torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8)))


class ShapeFromInside(nn.Module):
    """The tail sizes its upsampling by the shape of a layer between the taps."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, c, 3, 2, 1)
        self.b1, self.b2, self.b3 = (nn.Conv2d(c, c, 3, padding=1) for _ in range(3))
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.down(x))
        m = F.relu(self.b1(h))
        h = F.relu(self.b3(F.relu(self.b2(m))))
        return self.out(F.interpolate(h, size=(m.shape[2] * 2, m.shape[3] * 2)))


def test_layers_kept_only_for_their_shape_are_named_with_the_way_to_skip_them():
    gen, x = ShapeFromInside(), torch.randn(1, 3, 16, 16)
    with pytest.warns(UserWarning, match=r"still run \['b1'\] \(36,864 MACs\).*reads their shape.*capture='export'"):
        fx = shortcutify(gen, "down", "b3", x, capture="fx")  # (b1: 8x8 outputs of 8 channels, 8 * 3 * 3 MACs each)
    assert "b1" not in fx.skipped_nodes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exported = shortcutify(gen, "down", "b3", x, capture="export")
    assert fx.cost().shortcut.macs - exported.cost().shortcut.macs == 36_864
