"""Specification: a bad argument to the public API is refused by name, with what to give instead (from a fuzzing of
every public callable's parameters: before, each of these cases failed deep inside with a raw error, or passed)."""

import pytest
import torch

from shortcutify import (
    FixedInterval,
    InputMismatchError,
    InputTypeError,
    OutputSelectionError,
    calibrate,
    distill,
    evaluate,
    list_taps,
    make_block,
    shortcutify,
    suggest_taps,
)
from shortcutify.demo.models import ResnetGenerator, resnet_taps

X = torch.randn(1, 3, 16, 16)


@pytest.fixture(scope="module")
def sv():
    torch.manual_seed(0)
    gen = ResnetGenerator(3, 3, ngf=4, n_blocks=1)
    return shortcutify(gen, *resnet_taps(gen), X)


def _clips():
    return [torch.randn(6, 3, 16, 16)]


@pytest.mark.parametrize(
    "call, error, named",
    [
        (lambda sv: sv.predict(X, reference="abc"), TypeError, r"reference must be a keyframe's reference.*got str"),
        (lambda sv: sv.run_shortcut(X, reference=[1, 2]), TypeError, r"got list.*prepare_reference.*taps"),
        (lambda sv: sv.predict(X, reference=sv.run_keyframe(X)), TypeError, r"reference is a KeyframeOutput.*prepare_reference"),
        (lambda sv: sv.prepare_reference(None), TypeError, r"prepare_reference takes a keyframe.*got NoneType"),
        (lambda sv: sv.predict(torch.randn(2, 3, 16, 16), reference=sv.prepare_reference(sv.run_keyframe(X))),
         InputMismatchError, r"reference holds 1 row\(s\), the frames 2 stream\(s\)"),
        (lambda sv: sv.predict(X.double(), reference=sv.prepare_reference(sv.run_keyframe(X))), InputTypeError, r"input 0 is torch\.float64"),
        (lambda sv: sv.run_shortcut(torch.randn(1, 4, 16, 16), reference=sv.run_keyframe(X).taps), InputMismatchError, r"4 channels"),
        (lambda sv: sv.run_keyframe(X.long()), InputTypeError, r"torch\.int64"),
        (lambda sv: sv.encode(torch.randn(3)), InputMismatchError, r"shape \[3\]"),
        (lambda sv: sv.run_keyframe(X[0]), InputMismatchError, r"without its batch dimension"),
        (lambda sv: sv(X.to("meta")), InputTypeError, r"meta device"),
        (lambda sv: sv(X.to_sparse()), InputTypeError, r"sparse_coo.*to_dense"),
        (lambda sv: sv.cost([]), ValueError, r"example_inputs holds 0 input"),
        (lambda sv: sv.save(""), ValueError, r"path is empty"),
        (lambda sv: sv.save(None), TypeError, r"path must be a directory path"),
        (lambda sv: sv.compile(options="abc"), TypeError, r"options must be a dict"),
        (lambda sv: sv.compile(mode=["default"]), TypeError, r"mode must be a torch\.compile mode name"),
        (lambda sv: sv.compile(mode=""), TypeError, r"mode must be"),
        (lambda sv: sv.compile(cuda_graphs=torch.tensor([1, 0])), TypeError, r"cuda_graphs must be True or False"),
        (lambda sv: evaluate(sv, [torch.randn(4, 3, 16, 16, device="meta")]), InputTypeError, r"clip tensor 0 \(clip 0\) is on the meta device"),
        (lambda sv: evaluate(sv, _clips(), data_range="abc"), TypeError, r"data_range must be a number"),
        (lambda sv: evaluate(sv, _clips(), progress="no"), TypeError, r"progress must be True or False"),
        (lambda sv: calibrate(sv, _clips(), keyframe_rate=0.5, apply=torch.tensor([1, 0])), TypeError, r"apply must be True or False"),
        (lambda sv: distill(sv, _clips(), steps=1, betas=()), ValueError, r"betas must be two numbers in \[0, 1\)"),
        (lambda sv: distill(sv, _clips(), steps=1, betas=0.9), ValueError, r"betas"),
        (lambda sv: distill(sv, _clips(), steps=1, flip="no"), TypeError, r"flip must be True or False"),
        (lambda sv: distill(sv, _clips(), steps=1, bf16=None), TypeError, r"bf16 must be True or False"),
        (lambda sv: distill(sv, _clips(), steps=1, seed=2**63), ValueError, r"seed must be an integer between"),
        (lambda sv: distill(sv, _clips(), steps=1, batch_size=10**30), ValueError, r"batch_size must be a positive integer"),
        (lambda sv: distill(sv, {"a": _clips()[0]}, steps=1), TypeError, r"clips is a dict.*list\(clips\.values\(\)\)"),
        (lambda sv: distill(sv, _clips(), steps=1, data_range=[2.0]), TypeError, r"data_range must be a number"),
        (lambda sv: distill(sv, _clips(), steps=1, progress=False, perceptual=lambda a, b: torch.tensor(1.0)),
         OutputSelectionError, r"perceptual loss does not depend on the student image"),
    ],
)
def test_module_training_and_evaluation_arguments(sv, call, error, named):
    with pytest.raises(error, match=named):
        call(sv)


GEN = ResnetGenerator(3, 3, ngf=4, n_blocks=1)


@pytest.mark.parametrize(
    "call, error, named",
    [
        (lambda: FixedInterval(10**30), ValueError, r"from 1 to 2\*\*63 - 2"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X, interval=10**30), ValueError, r"2\*\*63 - 2"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X, width=10**6), ValueError, r"width must be an integer from 1 to"),
        (lambda: make_block("half", -1, 8), ValueError, r"enc_channels must be an integer from 1"),
        (lambda: make_block("half", 8, None), ValueError, r"dec_channels must be an integer from 1"),
        (lambda: make_block("half", 8, 8, kernel_size="abc"), ValueError, r"kernel_size must be an integer"),
        (lambda: make_block("half", 0, 8), ValueError, r"enc_channels"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X.to("meta")), InputTypeError, r"example input tensor 0 is on the meta device"),
        (lambda: list_taps(GEN, X.to_sparse()), InputTypeError, r"to_dense"),
        (lambda: suggest_taps(GEN, X, progress=torch.tensor([1, 0])), TypeError, r"progress must be True or False"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X, leaf_modules=torch.tensor([1, 0])), TypeError, r"leaf_modules must be"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X, leaf_modules=["model.44"]), ValueError, r"name no module.*close: .*'model\.4'"),
        (lambda: shortcutify(GEN, ["model.4"], "model.11", X), TypeError, r"got a list where a tap name goes"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X, concrete_args={"a": 1}), ValueError, r"concrete_args names \['a'\].*forward \['x'\]"),
        (lambda: shortcutify(GEN, *resnet_taps(GEN), X, tracer_kwargs={"nope": 1}), TypeError, r"tracer_kwargs \['nope'\] do not fit"),
    ],
)
def test_wrapping_and_building_arguments(call, error, named):
    with pytest.raises(error, match=named):
        call()


def test_what_the_checks_take_stays_taken(sv):
    """The checks above refuse no value that works: numpy booleans (NumPy 1 and 2) as flags, a one-element tensor as
    data_range, the largest count an int64 counter can step past."""
    import sys

    import numpy as np

    from shortcutify.core.checks import check_flag
    from shortcutify.train.metrics import psnr

    assert check_flag(np.True_, "flip") is True and check_flag(np.bool_(False), "flip") is False and check_flag(1, "flip")
    a, b = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert torch.equal(psnr(a, b, data_range=torch.tensor(1.0)), psnr(a, b, data_range=1.0))
    evaluate(sv, _clips(), data_range=torch.tensor(2.0), progress=np.False_)
    assert FixedInterval(sys.maxsize - 1).interval == sys.maxsize - 1


def test_a_reference_of_other_streams_is_named_also_when_its_rows_divide_the_frames(sv):
    ref = sv.prepare_reference(sv.run_keyframe(torch.randn(2, 3, 16, 16)))
    with pytest.raises(InputMismatchError, match=r"reference holds 2 row\(s\), the frames 1 stream\(s\)"):
        sv.predict(X, reference=ref)


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_a_reference_made_at_another_frame_size_is_refused_not_resized(resolution):
    """Before, the block resized the frame's tap to the reference's and returned an output of the keyframe's size.
    Refused for a frame size the module has not met (by the block, from the reference's encoder tap size) and for
    one it has (from the decoder tap size the keyframe gave)."""
    torch.manual_seed(0)
    gen = ResnetGenerator(3, 3, ngf=4, n_blocks=1)
    sv = shortcutify(gen, *resnet_taps(gen), X, resolution=resolution)
    key = sv.run_keyframe(X)
    other = torch.randn(1, 3, 24, 24)
    calls = [(sv.predict, sv.prepare_reference(key)), (sv.run_shortcut, sv.prepare_reference(key)), (sv.run_shortcut, key.taps)]
    for met in (False, True):  # a size no keyframe met: the block compares encoder taps; one met: the decoder taps
        if met:
            sv.run_keyframe(other)
        named = (r"made for a decoder tap of 8x8, but inputs of shape \[\(1, 3, 24, 24\)\] give one of 12x12" if met else
                 r"made from an encoder tap of 8x8, but this frame's is 12x12")
        for run, reference in calls:
            with pytest.raises(InputMismatchError, match=named):
                run(other, reference=reference)
            assert run(X, reference=reference) is not None  # the keyframe's own size still runs
    by_keyword = sv.run_keyframe(x=other)  # inputs given by keyword are told apart by their shapes too
    with pytest.raises(InputMismatchError, match="a reference serves frames of"):
        sv.predict(x=X, reference=sv.prepare_reference(by_keyword))


class _FixedSizeInside(torch.nn.Module):
    """Resizes every frame to 16x16 inside: its taps have one size whatever the frame's."""

    def __init__(self):
        super().__init__()
        self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 3, 2, stride=2)

    def forward(self, x):
        y = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        y = self.up(torch.relu(self.mid(torch.relu(self.down(y)))))
        return torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_a_reference_serves_frames_of_another_size_where_the_taps_have_the_keyframes_size():
    torch.manual_seed(0)
    sv = shortcutify(_FixedSizeInside(), "down", "mid", X)
    reference = sv.prepare_reference(sv.run_keyframe(X))
    assert sv.predict(torch.randn(1, 3, 24, 24), reference=reference).shape == (1, 3, 24, 24)
