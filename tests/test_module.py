"""Specification of the stateful ShortcutV2V module."""

import pytest
import torch

from generators import TwoInputGen
from shortcutify import FixedInterval, ShortcutV2V, shortcutify
from shortcutify.demo.models import ResnetGenerator


def _sv(interval=3, batch=2, size=16, **kw):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(batch, 3, size, size)
    return gen, x, shortcutify(gen, "model.4", "model.12", x, interval=interval, **kw)


def _frames(n, batch=2, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 3, size, size, generator=g)
    return [base + 0.05 * i * torch.randn(batch, 3, size, size, generator=g) for i in range(n)]


def test_keyframes_follow_the_fixed_interval_and_equal_the_teacher_exactly():
    gen, _, sv = _sv(interval=3)
    flags = []
    for x in _frames(8):
        out = sv(x)
        flags.append(sv.last_was_keyframe)
        if sv.last_was_keyframe:
            assert torch.equal(out, gen(x))
        else:
            assert out.shape == gen(x).shape and torch.isfinite(out).all()
            assert not torch.equal(out, gen(x))
    assert flags == [True, False, False, True, False, False, True, False]


def test_a_shortcut_frame_is_what_predict_and_run_shortcut_compute():
    _, _, sv = _sv(interval=3)
    for p in sv.block.parameters():  # a trained-looking block: flows, offsets and corrections live
        torch.nn.init.normal_(p, std=0.05)
    x0, x1 = _frames(2)
    with torch.no_grad():
        _, a, f = sv.run_keyframe(x0)
        ref = sv.block.prepare_reference(a, f)
        expected, f_hat, _ = sv.run_shortcut(x1, reference=ref)
        predicted = sv.predict(x1, reference=ref)
    sv(x0)
    assert torch.equal(sv(x1), expected) and not sv.last_was_keyframe
    assert torch.equal(predicted, expected)
    assert f_hat.shape == f.shape
    outputs = next(n for n in sv.inference_program.graph.nodes if n.op == "output")
    assert not isinstance(outputs.args[0], tuple)  # the inference program returns the output alone


def test_interval_one_runs_the_teacher_on_every_frame():
    gen, _, sv = _sv(interval=1)
    for x in _frames(3):
        assert torch.equal(sv(x), gen(x)) and sv.last_was_keyframe


def test_reset_starts_new_streams_with_a_keyframe():
    gen, _, sv = _sv()
    f = _frames(3)
    sv(f[0])
    sv(f[1])
    assert not sv.last_was_keyframe
    sv.reset()
    assert sv.reference is None
    assert torch.equal(sv(f[2]), gen(f[2])) and sv.last_was_keyframe


def test_a_resolution_change_starts_a_keyframe_instead_of_crashing():
    gen, _, sv = _sv()
    sv(_frames(1, size=16)[0])
    sv(_frames(1, size=16)[0])
    x24 = _frames(1, size=24)[0]
    assert torch.equal(sv(x24), gen(x24)) and sv.last_was_keyframe
    out = sv(x24 + 0.01)
    assert not sv.last_was_keyframe and out.shape == (2, 3, 24, 24)
    x1 = _frames(1, batch=1, size=24)[0]  # a batch-size change too
    sv(x1)
    assert sv.last_was_keyframe


def test_dtype_change_starts_a_keyframe_and_float64_works():
    gen, _, sv = _sv()
    x = _frames(2)
    sv(x[0])
    sv.double()
    out = sv(x[1].double())
    assert sv.last_was_keyframe and out.dtype == torch.float64
    assert torch.equal(out, gen(x[1].double()))
    out2 = sv(x[1].double() + 0.01)
    assert not sv.last_was_keyframe and out2.dtype == torch.float64


def test_streams_do_not_influence_each_other():
    gen, _, sv = _sv(interval=4)
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    frames = _frames(4)
    outs_a = [sv(x) for x in frames]
    sv.reset()
    frames_b = [x.clone() for x in frames]
    for x in frames_b:
        x[1] = torch.randn_like(x[1])  # stream 1 changes completely, stream 0 stays
    outs_b = [sv(x) for x in frames_b]
    for oa, ob in zip(outs_a, outs_b):
        assert torch.equal(oa[0], ob[0])
        assert not torch.equal(oa[1], ob[1])


def test_teacher_is_frozen_and_only_the_block_is_trainable():
    gen, _, sv = _sv()
    trainable = [p for p in sv.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in sv.block.parameters()}
    assert not any(p.requires_grad for p in gen.parameters())
    sv.train()
    assert sv.block.training and not gen.training and not any(m.training for m in gen.modules())


def test_inference_builds_no_autograd_graph():
    _, _, sv = _sv()
    for x in _frames(3):
        out = sv(x)
        assert out.grad_fn is None and not out.requires_grad
    assert all(t.grad_fn is None for t in sv.reference)


def test_custom_policy_decides_keyframes():
    class EveryOther:
        interval = 2

        def is_keyframe(self, frames_since_keyframe: int) -> bool:
            return frames_since_keyframe >= 2

    _, _, sv = _sv(policy=EveryOther())
    flags = []
    for x in _frames(5):
        sv(x)
        flags.append(sv.last_was_keyframe)
    assert flags == [True, False, True, False, True]


def test_bad_arguments_are_reported():
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="interval"):
        shortcutify(gen, "model.4", "model.12", x, interval=0)
    with pytest.raises(TypeError, match="policy"):
        shortcutify(gen, "model.4", "model.12", x, policy=object())
    with pytest.raises(TypeError, match="nn.Module"):
        shortcutify(lambda t: t, "a", "b", x)
    with pytest.raises(TypeError, match="example_inputs"):
        shortcutify(gen, "model.4", "model.12", "not a tensor")


def test_keyword_and_multi_input_calls():
    gen = TwoInputGen()
    label, prev = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8)
    sv = shortcutify(gen, "down", "up", (label, prev))
    out = sv(label, prev=prev)
    assert torch.equal(out["frame"], gen(label, prev)["frame"])
    sv(label, prev=prev + 0.1)
    assert not sv.last_was_keyframe


def test_repr_is_short_and_informative():
    _, _, sv = _sv()
    r = repr(sv)
    assert r.startswith("ShortcutV2V(") and "enc='model.4'" in r and "FixedInterval(3)" in r and len(r) < 400
    assert isinstance(sv, ShortcutV2V) and sv.policy.interval == 3 and isinstance(sv.policy, FixedInterval)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    gen, _, sv = _sv()
    sv.cuda()
    x = _frames(2)
    out0 = sv(x[0].cuda())
    torch.testing.assert_close(out0, gen(x[0].cuda()))
    out1 = sv(x[1].cuda())
    assert out1.is_cuda and not sv.last_was_keyframe


def test_moving_the_module_moves_tensors_the_teacher_graph_reads_directly():
    class Normalised(ResnetGenerator):
        def __init__(self):
            super().__init__(ngf=8, n_blocks=2)
            self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))

        def forward(self, x):
            return self.model(x - self.mean)

    gen = Normalised()
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "model.4", "model.12", x)
    sv.double()
    assert gen.mean.dtype == torch.float64
    assert torch.equal(sv(x.double()), gen(x.double()))
    report = sv.cost()  # counts the teacher on float64 inputs without a dtype clash
    assert report.teacher.macs > 0


def test_training_runs_a_shortcut_frame_through_shortcut_step_without_changing_the_module():
    """A frame against the keyframe's raw taps (prepared inside, as DDP wants) equals one
    against the prepared reference; the module's parts are the same objects afterwards."""
    from shortcutify import KeyframeTaps

    _, _, sv = _sv(interval=3)
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.05)
    parts = dict(sv.named_modules())
    x0, x1 = _frames(2)
    key = sv.run_keyframe(x0)
    step = sv.shortcut_step()
    trained = step(x1, reference=KeyframeTaps(key.enc, key.dec), return_aligned=True)
    with torch.no_grad():
        prepared = sv.run_shortcut(x1, reference=sv.prepare_reference(key), return_aligned=True)
    torch.testing.assert_close(trained.output, prepared.output)
    torch.testing.assert_close(trained.aligned, prepared.aligned)
    (trained.feature.square().mean() + trained.aligned.square().mean()).backward()
    assert all(p.grad is not None for p in sv.block.parameters())
    assert all(p.grad is None for p in sv.teacher.parameters())
    assert {k: id(v) for k, v in sv.named_modules()} == {k: id(v) for k, v in parts.items()}
    assert sv.run_shortcut(x1, reference=sv.prepare_reference(key)).aligned is None  # only when asked for


def test_the_config_describes_the_taps_and_the_block_and_round_trips():
    from shortcutify import ShortcutConfig

    _, _, sv = _sv(interval=3, resolution="full", width=4)
    cfg = sv.config
    assert (cfg.enc_layer, cfg.dec_layer, cfg.width, cfg.resolution) == ("model.4", "model.12", 4, "full")
    assert cfg.enc_shape == tuple(sv.enc.shape[1:]) and cfg.dec_shape == tuple(sv.dec.shape[1:])
    assert ShortcutConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="lacks"):
        ShortcutConfig.from_dict({"enc_layer": "model.4"})
    good = cfg.to_dict()
    for bad, match in (
        (None, "must be a dict"), ({**good, "width": -5}, "width must be an int >= 1"), ({**good, "kernel_size": 0}, "kernel_size"),
        ({**good, "enc_shape": [8, 4]}, r"\[C, H, W\]"), ({**good, "dec_shape": [8, 0, 4]}, r"\[C, H, W\]"),
    ):
        with pytest.raises(ValueError, match=match):
            ShortcutConfig.from_dict(bad)


def test_an_unknown_capture_option_is_refused_by_name():
    gen, x, _ = _sv()
    with pytest.raises(TypeError, match="leaf_module"):
        shortcutify(gen, "model.4", "model.12", x, leaf_module=[torch.nn.Conv2d])


def test_the_training_step_holds_only_the_block():
    """Its parameters, its mode and what DistributedDataParallel would wrap are the block's alone."""
    gen, _, sv = _sv()
    step = sv.shortcut_step()
    assert {id(p) for p in step.parameters()} == {id(p) for p in sv.block.parameters()}
    step.train()
    assert sv.block.training and not any(m.training for m in gen.modules())
    step.eval()


def test_without_taps_the_best_suggestion_is_used_and_named(caplog):
    from shortcutify import suggest_taps

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 32, 32)
    best = suggest_taps(gen, x, top=1)[0]
    with caplog.at_level("WARNING", logger="shortcutify"):
        sv = shortcutify(gen, example_inputs=x)
    assert (sv.config.enc_layer, sv.config.dec_layer) == (best.enc_layer, best.dec_layer)
    assert best.enc_layer in caplog.text and best.dec_layer in caplog.text
    assert sv(x).shape == gen(x).shape


def test_one_tap_alone_or_no_example_is_refused():
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="both taps or neither"):
        shortcutify(gen, "model.4", example_inputs=x)
    with pytest.raises(TypeError, match="example_inputs"):
        shortcutify(gen, "model.4", "model.12")
