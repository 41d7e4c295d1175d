"""Specification: inputs that do not fit what the generator was wrapped with are refused, naming the fix."""

import pytest
import torch

from generators import TinyUNet, moving_clips
from shortcutify import (
    InputMismatchError,
    InputTypeError,
    ShortcutifyError,
    TapShapeError,
    calibrate,
    distill,
    evaluate,
    list_taps,
    load,
    shortcutify,
    suggest_taps,
)
from shortcutify.demo.models import ResnetGenerator


def _sv(batch=1, capture="auto"):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    return gen, shortcutify(gen, "model.4", "model.12", torch.randn(batch, 3, 16, 16), capture=capture)


@pytest.mark.parametrize(
    "frame, error, message",
    [
        (torch.randn(3, 16, 16), InputMismatchError, r"input 0 has shape \[3, 16, 16\].*4-D tensors.*x\.unsqueeze\(0\)"),
        (torch.randn(1, 1, 3, 16, 16), InputMismatchError, r"shape \[1, 1, 3, 16, 16\].*give 4-D tensors"),
        (torch.randn(1, 4, 16, 16), InputMismatchError, r"input 0 has 4 channels, the generator's input 0 3"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), InputTypeError, r"torch\.uint8.*floating.*frames\.float\(\) / 127\.5 - 1"),
    ],
    ids=["no-batch-dimension", "5-D", "channels", "uint8"],
)
def test_a_frame_unlike_the_example_is_refused_before_the_generator_runs(frame, error, message):
    _, sv = _sv()
    with pytest.raises(error, match=message) as e:
        sv(frame)
    assert isinstance(e.value, ShortcutifyError)
    assert sv.reference is None  # nothing kept from the refused call
    with torch.no_grad():
        sv(torch.randn(2, 3, 24, 24))  # other sizes and batches stay fine


def test_a_frame_is_checked_when_the_inputs_change_not_on_every_call():
    _, sv = _sv()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        sv(x)
        sv.reset(0)
        sv(x)  # the same signature: no new check needed, and none refuses it
    with pytest.raises(InputTypeError):
        sv(x.to(torch.uint8))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_a_frame_of_another_floating_dtype_than_the_weights_names_both_fixes(dtype, capture):
    """On both capture paths (export captures again for another dtype, and the generator fails there), and in
    ``cost()`` too."""
    gen, sv = _sv(capture=capture)
    x = torch.randn(1, 3, 16, 16)
    fixes = rf"input 0 is {dtype}, but the module's weights are torch\.float32.*\.to\(torch\.float32\).*sv\.to\({dtype}\)"
    with pytest.raises(InputTypeError, match=fixes):
        sv(x.to(dtype))
    with pytest.raises(InputTypeError, match=fixes):
        sv.cost(x.to(dtype))
    assert sv.reference is None
    with torch.no_grad():
        torch.testing.assert_close(sv(x), gen(x), rtol=0, atol=0)  # nothing kept from the refused call
        sv.to(torch.float64)
        torch.testing.assert_close(sv(x.double()), gen(x.double()), rtol=0, atol=0)  # the module converted: fine


def test_example_inputs_without_a_batch_or_with_an_empty_one_say_so():
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    with pytest.raises(TapShapeError, match=r"has shape \(16, 8, 8\).*give example_inputs with their batch dimension"):
        shortcutify(gen, "model.4", "model.12", torch.randn(3, 16, 16))
    for call in (
        lambda x: shortcutify(gen, "model.4", "model.12", x),
        lambda x: suggest_taps(gen, x),
        lambda x: list_taps(gen, x),
    ):
        with pytest.raises(ValueError, match=r"empty batch \(shape \[0, 3, 16, 16\]\).*B >= 1"):
            call(torch.randn(0, 3, 16, 16))


@pytest.mark.parametrize("streams", ["0", b"\x00", object(), [[0, 1], [2]]])
def test_reset_refuses_what_is_not_stream_indices(streams):
    _, sv = _sv(batch=2)
    with torch.no_grad():
        sv(torch.randn(2, 3, 16, 16))
    with pytest.raises(IndexError, match="stream indices"):
        sv.reset(streams)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_distill_refuses_a_seed_that_is_not_an_integer(seed):
    _, sv = _sv()
    before = {k: v.clone() for k, v in sv.block.state_dict().items()}
    with pytest.raises(TypeError, match="seed must be an integer"):
        distill(sv, moving_clips(2), steps=1, seed=seed, progress=False)
    assert all(torch.equal(v, sv.block.state_dict()[k]) for k, v in before.items())


def test_suggest_taps_refuses_integer_frames_and_non_finite_examples():
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(InputTypeError, match=r"frames\[0\] is torch\.uint8.*frames\.float\(\) / 255"):
        suggest_taps(gen, x, frames=torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN or infinite.*finite"):
        suggest_taps(gen, torch.full_like(x, float("nan")))


def test_calibrate_refuses_clips_on_which_no_change_is_finite():
    _, sv = _sv()
    with pytest.raises(ValueError, match="every change measured on these clips is NaN or infinite"):
        calibrate(sv, [torch.full((6, 3, 16, 16), float("nan"))], keyframe_rate=1 / 3, progress=False)


def test_costs_of_a_batch_say_they_count_every_stream():
    _, one = _sv()
    _, four = _sv(batch=4)
    assert str(one.cost()).startswith("Costs per frame on input 1x3x16x16")
    assert str(four.cost()).startswith("Costs per frame of all 4 streams on input 4x3x16x16")
    assert four.cost().teacher.macs == 4 * one.cost().teacher.macs


class _Scaled(torch.nn.Module):
    """``forward(x, scale)``: a number among the positional arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x, scale):
        return self.inner(x) * scale


def test_a_number_among_the_example_inputs_streams_but_training_and_saving_name_concrete_args(tmp_path):
    torch.manual_seed(0)
    gen, x = _Scaled(), torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", (x, 2.0))
    with torch.no_grad():
        torch.testing.assert_close(sv(x, 2.0), gen(x, 2.0))
    fix = r"input 1 \('scale'\) was given as float 2\.0.*concrete_args=\{'scale': 2\.0\}"
    with pytest.raises(InputTypeError, match=r"distill\(\) needs example inputs that are all tensors.*" + fix):
        distill(sv, moving_clips(2), steps=1, batch_size=2, progress=False)
    with pytest.raises(InputTypeError, match=r"save\(\) needs .*" + fix):
        sv.save(tmp_path / "b.pt")
    with pytest.raises(InputTypeError, match=r"evaluate\(\) needs"):
        evaluate(sv, moving_clips(1))
    with pytest.raises(InputTypeError, match=r"calibrate\(\) needs"):
        calibrate(sv, moving_clips(1), keyframe_rate=0.5, progress=False)
    fixed = shortcutify(gen, "inner.model.4", "inner.model.12", x, concrete_args={"scale": 2.0})  # the way named
    distill(fixed, moving_clips(2), steps=1, batch_size=2, progress=False)
    fixed.save(tmp_path / "b.pt")
    with torch.no_grad():
        torch.testing.assert_close(load(gen, tmp_path / "b.pt")(x), gen(x, 2.0))


@pytest.mark.parametrize(
    "shape, last",
    [((1, 40, 48, 3), True), ((2, 24, 32, 1), True), ((1, 3, 40, 48), False), ((1, 8, 1, 1), False),
     ((1, 64, 4, 4), False), ((1, 6, 3, 4), False), ((1, 3, 3, 3), False)],
    ids=["rgb", "grey", "channels-first", "code", "latent-4x4", "tiny", "3x3x3"],
)
def test_channels_last_is_told_by_few_channels_after_a_frame_of_more_than_four_pixels(shape, last):
    from shortcutify.core.checks import looks_channels_last

    assert looks_channels_last(torch.zeros(shape)) is last


class _Timed(torch.nn.Module):
    """``forward(x, t)`` with a float64 timestep the generator casts itself, and a skip that needs even sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyUNet()

    def forward(self, x, t):
        return self.inner(x) * t.float().view(-1, 1, 1, 1)


def test_an_input_given_in_another_dtype_from_the_start_is_not_blamed_for_other_errors():
    torch.manual_seed(0)
    gen = _Timed()
    t = torch.ones(1, dtype=torch.float64)
    sv = shortcutify(gen, "inner.down", "inner.mid2", (torch.randn(1, 3, 16, 16), t))
    with torch.no_grad():
        sv(torch.randn(1, 3, 16, 16), t)  # the timestep's own dtype: fine
        with pytest.raises(InputMismatchError, match="the generator itself fails on inputs of shape") as e:
            sv(torch.randn(1, 3, 15, 15), t)  # the generator's own error (odd size), not the timestep's dtype
    assert not isinstance(e.value, InputTypeError) and "Sizes of tensors must match" in str(e.value)
    with pytest.raises(InputTypeError, match="input 0 is torch.float64"):
        sv(torch.randn(1, 3, 16, 16, dtype=torch.float64), t)  # the frames' dtype is still named


@pytest.mark.parametrize("train", [True, False], ids=["distill", "evaluate"])
def test_a_clip_tensor_of_several_streams_is_refused_saying_each_clip_is_one_stream(train):
    _, sv = _sv()
    streams = torch.randn(6, 2, 3, 16, 16)  # [T, B, C, H, W]
    with pytest.raises(InputMismatchError, match=r"each clip is one stream, \[T, 3, 16, 16\]: give a list of them, list\(x\.unbind\(1\)\)"):
        distill(sv, [streams], steps=1, progress=False) if train else evaluate(sv, [streams])
    assert evaluate(sv, list(streams.unbind(1)), data_range=2.0).shortcut_frames == 8  # the fix named


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_example_inputs_the_generator_cannot_run_are_named_at_wrap_time(capture):
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    uint8 = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    for call in (lambda x: shortcutify(gen, "model.4", "model.12", x, capture=capture), lambda x: list_taps(gen, x, capture=capture)):
        with pytest.raises(InputTypeError, match=r"itself fails on the example inputs \['\[1, 3, 16, 16\] uint8'\].*frames\.float\(\) / 127\.5 - 1"):
            call(uint8)
        with pytest.raises(InputMismatchError, match=r"itself fails on the example inputs \['\[1, 1, 16, 16\] float32'\].*channels its first layer takes"):
            call(torch.rand(1, 1, 16, 16))
    with pytest.raises(InputTypeError, match="are integer tensors"):
        suggest_taps(gen, uint8, progress=False, capture=capture)


def test_list_taps_of_a_frame_without_its_batch_dimension_says_why_no_value_is_a_tap():
    gen = ResnetGenerator(ngf=8, n_blocks=2).eval()
    with pytest.warns(UserWarning, match=r"no value of the generator is 4-D.*\[\[3, 16, 16\]\].*frame\.unsqueeze\(0\)"):
        taps = list_taps(gen, torch.rand(3, 16, 16))
    assert not any(t.is_4d for t in taps)


def test_numpy_frames_and_clips_are_refused_naming_the_conversion():
    import numpy as np

    _, sv = _sv()
    with pytest.raises(InputTypeError, match=r"input 0 is a ndarray.*torch\.from_numpy\(a\).*permute\(2, 0, 1\)"):
        sv(np.zeros((1, 3, 16, 16), np.float32))
    for call in (lambda c: evaluate(sv, c), lambda c: distill(sv, c, steps=1, progress=False)):
        with pytest.raises(TypeError, match=r"got ndarray \(clip 0\) \(a numpy array: torch\.from_numpy\(clip\)"):
            call([np.zeros((4, 3, 16, 16), np.float32)])


def test_an_empty_batch_under_export_is_named_as_such():
    """Every stream left: export cannot capture the generator for no frame (before: "the cut skips no multiply-adds")."""
    _, sv = _sv(capture="export")
    with torch.no_grad(), pytest.raises(InputMismatchError, match=r"empty batch.*skip the call"):
        sv(torch.randn(0, 3, 16, 16))


class _DictInput(torch.nn.Module):
    """``forward(inputs)`` with ``inputs = {"image": frames, "style": vectors}``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, inputs):
        return self.inner(inputs["image"]) + inputs["style"][:, :, None, None]


def test_a_dict_of_tensors_as_an_input_streams_but_training_names_a_wrapper():
    """(before: the advice to fix the dict with concrete_args, a tensor's repr cut in the middle of the code)"""
    torch.manual_seed(0)
    gen, x = _DictInput(), {"image": torch.randn(1, 3, 16, 16), "style": torch.randn(1, 3)}
    sv = shortcutify(gen, "inner.model.4", "inner.model.12", (x,))
    with torch.no_grad():
        torch.testing.assert_close(sv(x), gen(x))
    clips = [({"image": torch.randn(4, 3, 16, 16), "style": torch.randn(4, 3)},)]
    with pytest.raises(InputTypeError, match=r"input 0 \('inputs'\) is a dict holding tensors.*wrapper module") as e:
        distill(sv, clips, steps=1, progress=False)
    assert "concrete_args" not in str(e.value) and "tensor([" not in str(e.value)


class _Conditioned(torch.nn.Module):
    """``forward(x, cond=None)``: a conditioning the example gives and a call may leave out."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.film, self.out = torch.nn.Linear(4, 8), torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x, cond=None):
        h = torch.relu(self.c1(x))
        if cond is not None:
            h = h * self.film(cond)[:, :, None, None]
        return self.out(torch.relu(self.c2(h)))


@pytest.mark.parametrize("call", ["forward", "run_keyframe", "encode"])
def test_an_input_left_out_of_an_fx_capture_is_named_and_export_captures_again(call):
    """(before: fx's programs ran with forward()'s default, None, where they were traced with a tensor: a TypeError
    from inside the graph)"""
    torch.manual_seed(0)
    gen, x, c = _Conditioned().eval(), torch.randn(1, 3, 16, 16), torch.randn(1, 4)
    sv = shortcutify(gen, "c1", "c2", (x, c), capture="fx")
    with pytest.raises(InputMismatchError, match=r"1 input\(s\) given where the generator was wrapped with 2.*missing \['cond'\].*capture='export'"):
        getattr(sv, call)(x)
    with torch.no_grad():
        assert torch.equal(sv(x, cond=c), gen(x, c))  # (given by keyword: fx's programs take it so)
        exported = shortcutify(gen, "c1", "c2", (x, c), capture="export")
        assert torch.equal(exported(x), gen(x))  # (captured again for the new inputs)


class _KeywordOnly(_Conditioned):
    def forward(self, x, *, cond):
        return super().forward(x, cond)


def test_an_example_input_for_a_keyword_only_argument_is_refused_with_the_wrapper_to_write():
    x, c = torch.randn(1, 3, 16, 16), torch.randn(1, 4)
    with pytest.raises(InputMismatchError, match=r"takes 2 positional arguments.*\['cond'\] are keyword-only: to vary one.*wrap the generator"):
        shortcutify(_KeywordOnly().eval(), "c1", "c2", (x, c))
