"""Specification of ``output=``: which part of a generator's output distill, evaluate and calibrate compare."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from torch import nn

from generators import moving_clips
from shortcutify import IncompatibleCheckpointError, LossWeights, OutputSelectionError, calibrate, distill, evaluate, shortcutify
from shortcutify.train import output_image

IMAGE, AUX = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)


class Pair(NamedTuple):
    aux: torch.Tensor
    image: torch.Tensor


@dataclass
class Registered:  # (a dataclass output must be registered with torch's pytree for the generator to be captured)
    aux: torch.Tensor
    image: torch.Tensor


torch.export.register_dataclass(Registered)


@pytest.mark.parametrize(
    "out, output",
    [
        ({"aux": AUX, "image": IMAGE}, "image"),
        ((AUX, IMAGE), 1),
        ((AUX, IMAGE), -1),
        ([AUX, IMAGE], 1),
        (Pair(AUX, IMAGE), "image"),
        (Pair(AUX, IMAGE), 1),
        (Registered(AUX, IMAGE), "image"),
        ({0: AUX, 1: IMAGE}, 1),
        ((AUX, IMAGE), lambda out: out[1]),
        ({"stage": (AUX,), "final": (IMAGE, AUX)}, "final"),  # a part with several images: its first
    ],
)
def test_output_names_the_image_by_key_field_index_or_function(out, output):
    assert output_image(out, output) is IMAGE
    assert output_image(out) is not IMAGE  # (without it, the first image: the auxiliary one)


def test_a_named_image_is_read_as_the_first_one_is_channels_last_and_stacks_included():
    last = torch.randn(2, 16, 16, 3)
    assert torch.equal(output_image({"a": AUX, "b": last}, "b"), last.movedim(-1, 1))
    stack = torch.randn(2, 3, 4, 8, 8)
    assert torch.equal(output_image((AUX, stack), 1), stack.flatten(1, 2))


@pytest.mark.parametrize(
    "out, output, message",
    [
        ({"aux": AUX}, "image", r"output='image': the generator's output is a dict with keys \['aux'\], without that key"),
        (Pair(AUX, IMAGE), "frame", r"a Pair with fields \['aux', 'image'\]"),
        ((AUX, IMAGE), 2, "the index is out of range"),
        ((AUX, IMAGE), "image", "names a key, but the generator's output is a tuple of 2"),
        (IMAGE, 0, r"names an index, but the generator's output is a tensor \(1, 3, 8, 8\)"),
        (IMAGE, "image", "names a key, but the generator's output is a tensor"),
        ((AUX, IMAGE), lambda out: out[0].sum(), r"returned a torch.float32 tensor \(\)"),
        ((AUX, IMAGE), lambda out: None, "returned NoneType"),
        ((AUX, IMAGE.long()), 1, r"output=1 names \(a tensor \(1, 3, 8, 8\)\) holds no floating tensor"),
        ({"mask": torch.zeros(1, 8, 8)}, None, "the generator's output holds no floating tensor"),
    ],
)
def test_output_that_names_no_image_is_refused_saying_what_the_output_holds(out, output, message):
    with pytest.raises(OutputSelectionError, match=message):
        output_image(out, output)


class TwoStages(nn.Module):
    """A multi-stage generator (HINet, MPRNet): an early stage's image, then the final one."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.second = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )

    def forward(self, x):
        early = self.first(x)
        return {"early": early, "final": self.second(early)}


def _two_stages():
    torch.manual_seed(0)
    sv = shortcutify(TwoStages().eval(), "second.0", "second.2", torch.randn(1, 3, 16, 16))
    for p in sv.block.parameters():  # (a block that changes the frame: the untrained one reconstructs nothing)
        torch.nn.init.normal_(p, std=0.1)
    return sv


def test_evaluate_compares_the_named_image():
    sv, clips = _two_stages(), moving_clips(1, frames=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # named: no warning about the early image
        final = evaluate(sv, clips, data_range=2.0, output="final").summary()
    early = evaluate(sv, clips, data_range=2.0, output="early")  # computed before the encoder tap: exact
    assert math.isfinite(final["psnr"]) and final["psnr"] < 100
    assert all(math.isinf(p) for p, k in zip(early.psnr, early.keyframe) if not k)
    by_function = evaluate(sv, clips, data_range=2.0, output=lambda out: out["final"]).summary()
    assert by_function == final


def test_evaluate_without_output_names_the_argument_when_the_first_image_is_exact():
    with pytest.warns(UserWarning, match="name it with output="):
        evaluate(_two_stages(), moving_clips(1, frames=4), data_range=2.0)


def test_calibrate_judges_quality_on_the_named_image():
    sv, clips = _two_stages(), moving_clips(2, frames=6)
    worst = calibrate(sv, clips, min_psnr=0.0, data_range=2.0, output="final", apply=False, progress=False).worst_psnr
    assert worst is not None and math.isfinite(worst)
    with pytest.raises(OutputSelectionError, match="'frame'"):
        calibrate(sv, clips, min_psnr=0.0, data_range=2.0, output="frame", progress=False)


def test_distill_output_loss_compares_only_the_named_image():
    only_output = LossWeights(feature=0, alignment=0, output=1)
    sv = _two_stages()
    final = distill(sv, moving_clips(2), steps=2, weights=only_output, output="final", progress=False).losses["output"]
    sv = _two_stages()
    both = distill(sv, moving_clips(2), steps=2, weights=only_output, progress=False).losses["output"]
    # the early image is exact on shortcut frames: averaged in (the default), it halves the loss
    assert both[0] == pytest.approx(final[0] / 2, rel=1e-5)


def test_distill_refuses_a_named_image_the_block_cannot_change_leaving_the_block_as_given():
    sv = _two_stages()
    before = {k: v.clone() for k, v in sv.block.state_dict().items()}
    with pytest.raises(OutputSelectionError, match=r"\['output'\] do not depend on the shortcut block: they compare the image output='early'"):
        distill(sv, moving_clips(2), steps=2, weights=LossWeights(output=1), output="early", progress=False)
    assert all(torch.equal(v, sv.block.state_dict()[k]) for k, v in before.items())


def test_distill_validates_on_the_named_image():
    sv = _two_stages()
    hist = distill(sv, moving_clips(2), steps=2, val_clips=moving_clips(1, seed=3), val_every=2, data_range=2.0,
                   output="final", progress=False)
    assert hist.val and math.isfinite(hist.val[-1]["psnr"])


def test_resuming_with_another_named_image_is_refused(tmp_path):
    sv = _two_stages()
    distill(sv, moving_clips(2), steps=1, checkpoint_dir=tmp_path, output="final", progress=False)
    with pytest.raises(IncompatibleCheckpointError, match="output: checkpoint 'final', this run 1"):
        distill(sv, moving_clips(2), steps=2, checkpoint_dir=tmp_path, resume=True, output=1, progress=False)


@pytest.mark.parametrize("bad", [True, 1.5, ["final"], b"final"])
def test_an_output_that_is_no_selector_is_refused_before_anything_runs(bad):
    sv = _two_stages()
    clips = moving_clips(1, frames=4)
    for call in (lambda: distill(sv, clips, steps=1, output=bad, progress=False),
                 lambda: evaluate(sv, clips, output=bad),
                 lambda: calibrate(sv, clips, keyframe_rate=0.5, output=bad, progress=False)):
        with pytest.raises(TypeError, match="output must name the image in the generator's output"):
            call()


def test_distill_and_evaluate_read_a_registered_dataclass_output_by_field():
    class Framed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TwoStages().second

        def forward(self, x):
            return Registered(aux=x, image=self.net(x))

    sv = shortcutify(Framed().eval(), "net.0", "net.2", torch.randn(1, 3, 16, 16))
    hist = distill(sv, moving_clips(2), steps=2, weights=LossWeights(output=1), output="image", progress=False)
    assert hist.losses["output"][0] > 0
    with pytest.raises(OutputSelectionError, match="do not depend on the shortcut block"):  # the input passed through
        distill(sv, moving_clips(2), steps=1, weights=LossWeights(feature=0, alignment=0, output=1), output="aux", progress=False)
    assert math.isfinite(evaluate(sv, moving_clips(1, frames=4), data_range=2.0, output="image").summary()["psnr"])
