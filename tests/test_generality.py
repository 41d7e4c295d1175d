"""Specification of generators of shapes beyond one frame in, one frame out.

* A recurrent generator ``forward(frame, state) -> (image, new_state)`` whose new state is
  the decoder tap itself: shortcut frames return the predicted feature as the state, and
  the cut still skips the work between the taps, whichever path captured it.
* A generator with non-tensor keyword defaults that drive control flow (CUT's
  ``forward(input, layers=[], encode_only=False)``): fx fixes them to their defaults with no
  ``concrete_args``, and a call with another value is refused, naming the argument.
* A semantic-map-to-video generator ``forward(labels [B, H, W] int64) -> image``: its label maps are
  its frames, for automatic taps (moved as frames are), training and evaluation (clips ``[T, H, W]``).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shortcutify import InputMismatchError, ShortcutifyError, distill, evaluate, list_taps, shortcutify
from shortcutify.core.capture import EXPORT_TOLERANCE, FixedArgumentError


class Recurrent(nn.Module):
    """``(frame [B, 3, H, W], state [B, 8, H, W]) -> (image [B, 3, H, W], new_state)``; the new state is ``dec``'s output."""

    def __init__(self, c=8):
        super().__init__()
        self.enc = nn.Conv2d(3 + c, c, 3, stride=2, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.dec = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.head = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, frame, state):
        f = self.dec(self.mid(self.enc(torch.cat([frame, state], 1))))
        return torch.tanh(self.head(f)), f


def _close(a, b, exact):
    return torch.equal(a, b) if exact else torch.allclose(a, b, rtol=EXPORT_TOLERANCE, atol=EXPORT_TOLERANCE)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_decoder_tap_that_is_also_an_output_is_predicted_there_too(capture):
    gen = Recurrent().eval()
    frame, state = torch.randn(1, 3, 16, 16), torch.zeros(1, 8, 16, 16)
    sv = shortcutify(gen, "enc", "dec", (frame, state), capture=capture, interval=4)
    assert sv.config.capture == capture
    assert sv.skipped_nodes  # mid and dec are not run on shortcut frames
    cost = sv.cost()
    assert cost.shortcut.macs < cost.teacher.macs

    exact = capture == "fx"
    image, new_state = sv(frame, state)  # a keyframe: the teacher's output and its true state
    assert sv.last_was_keyframe
    t_image, t_state = gen(frame, state)
    assert _close(image, t_image, exact) and _close(new_state, t_state, exact)
    key = sv.run_keyframe(frame, state)
    assert _close(key.output[1], key.dec, exact)

    for step in range(2):  # shortcut frames: the state is the block's prediction of the decoder feature
        frame = frame + 0.1
        reference = sv.reference
        image, next_state = sv(frame, new_state)
        assert not sv.last_was_keyframe
        assert next_state.shape == state.shape
        predicted = sv.run_shortcut(frame, new_state, reference=reference)
        assert torch.equal(next_state, predicted.feature)
        assert torch.equal(image, predicted.output[0])
        with torch.no_grad():  # the image is the head of that same prediction
            assert torch.allclose(image, torch.tanh(gen.head(next_state)), atol=1e-6)
        new_state = next_state


class CutLike(nn.Module):
    """CUT's generator interface: ``layers`` and ``encode_only`` drive which features it returns."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 2, stride=2), nn.ReLU(),
            nn.Conv2d(8, 3, 3, padding=1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, input, layers=[], encode_only=False):  # noqa: B006 (CUT's signature)
        if -1 in layers:
            layers.append(len(self.model))
        if len(layers) > 0:
            feat, feats = input, []
            for layer_id, layer in enumerate(self.model):
                feat = layer(feat)
                if layer_id in layers:
                    feats.append(feat)
                if layer_id == layers[-1] and encode_only:
                    return feats
            return feat, feats
        return self.model(input)


def test_keyword_defaults_that_drive_control_flow_are_fixed_and_checked():
    gen, x = CutLike().eval(), torch.randn(1, 3, 16, 16)
    assert [t.name for t in list_taps(gen, x, capture="fx")]  # traces with no concrete_args
    sv = shortcutify(gen, "model.2", "model.8", x, capture="fx", interval=4)
    assert sv.config.capture == "fx"
    assert sv.skipped_nodes
    assert torch.equal(sv(x), gen(x))  # a keyframe
    assert sv.last_was_keyframe
    y = sv(x + 0.1)
    assert not sv.last_was_keyframe and y.shape == x.shape
    assert torch.equal(sv(x, encode_only=False), gen(x))  # the default, given by keyword: accepted
    assert torch.equal(sv.run_keyframe(x, [], False).output, gen(x))  # or positionally

    with pytest.raises(FixedArgumentError, match="encode_only") as err:
        sv(x, layers=[], encode_only=True)  # a new signature: a keyframe, whose program fixed encode_only
    assert isinstance(err.value, ShortcutifyError) and isinstance(err.value, ValueError)
    assert "concrete_args" in str(err.value)
    with pytest.raises(FixedArgumentError, match="layers"):
        sv(x, layers=[0, 4])
    with pytest.raises(FixedArgumentError, match=r"layers=a tensor of shape \[1, 3, 16, 16\] \(torch\.float32\)\. To") as err:
        sv(x, layers=x)  # a tensor is named by its shape, not printed
    assert len(str(err.value)) < 800
    with pytest.raises(FixedArgumentError, match="encode_only"):  # the shortcut programs keep the check too
        sv.predict(x, reference=sv.reference, encode_only=True)
    with pytest.raises(FixedArgumentError, match="encode_only"):
        sv.run_shortcut(x, reference=sv.reference, encode_only=True)


def test_concrete_args_still_fix_a_chosen_value():
    gen, x = CutLike().eval(), torch.randn(1, 3, 16, 16)
    # a container in concrete_args keeps its keyword; encode_only is fixed to its default beside it
    sv = shortcutify(gen, "model.2", "model.8", x, capture="fx", concrete_args={"layers": []})
    assert torch.equal(sv(x), gen(x)) and torch.equal(sv(x, layers=[]), gen(x))
    with pytest.raises(FixedArgumentError, match="layers"):
        sv(x, layers=[2])
    with pytest.raises(FixedArgumentError, match="encode_only"):
        sv(x, encode_only=True)


class _KeywordOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x, *, gain=1.0):
        return self.net(x) * gain


class _AnyKeywords(_KeywordOnly):
    def forward(self, x, **options):
        return self.net(x) * options.get("gain", 1.0)


@pytest.mark.parametrize("gen, capture", [(_KeywordOnly(), "export"), (_AnyKeywords(), "auto"), (_AnyKeywords(), "export")])
def test_a_keyword_the_programs_do_not_take_is_refused_naming_how_to_vary_or_fix_it(gen, capture):
    x = torch.randn(1, 3, 16, 16)
    sv = shortcutify(gen.eval(), "net.0", "net.2", x, capture=capture)
    assert sv.config.capture == "export"  # (fx cannot run a graph of **options node by node: auto falls back)
    assert torch.equal(sv(x), gen(x))
    with pytest.raises(FixedArgumentError, match=r"keyword argument\(s\) \['gain'\] that the captured programs do not take.*positionally"):
        sv(x, gain=2.0)  # (before: torch's TypeError from the program)


def test_example_inputs_given_as_a_dict_are_one_argument_and_named_so_when_the_generator_fails():
    with pytest.raises(InputMismatchError, match=r"a dict is read as forward\(\)'s first argument; for keyword arguments give a tuple"):
        shortcutify(_KeywordOnly().eval(), "net.0", "net.2", {"x": torch.randn(1, 3, 16, 16)})

    class ReadsADict(_KeywordOnly):  # a generator whose one argument is a dict
        def forward(self, data):
            return self.net(data["frame"])

    frame = torch.randn(1, 3, 16, 16)
    sv = shortcutify(ReadsADict().eval(), "net.0", "net.2", {"frame": frame})
    assert torch.equal(sv({"frame": frame}), ReadsADict.forward(sv.teacher, {"frame": frame}))


def test_export_takes_keyword_arguments_at_their_defaults_and_inputs_only_positionally():
    x = torch.randn(1, 3, 16, 16)
    gen = _KeywordOnly().eval()
    sv = shortcutify(gen, "net.0", "net.2", x, capture="export")
    assert torch.equal(sv(x, gain=1.0), gen(x))  # the default: computed by the programs already
    assert sv(x + 0.1, gain=1.0).shape == x.shape and not sv.last_was_keyframe
    with pytest.raises(FixedArgumentError, match=r"inputs \['x'\] were given by keyword.*positionally"):
        sv(x=x)


class LabelsToImage(nn.Module):
    """``labels [B, H, W]`` (int64, ``K`` classes) ``-> image [B, 3, H, W]``, one-hot inside ``forward``."""

    K = 5

    def __init__(self, c=8):
        super().__init__()
        self.head = nn.Conv2d(self.K, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU()) for _ in range(2)])
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, labels):
        h = F.relu(self.head(F.one_hot(labels, self.K).permute(0, 3, 1, 2).float()))
        return torch.tanh(self.tail(F.relu(self.up(self.body(F.relu(self.down(h)))))))


def _label_clip(frames=6, size=16, shift=0):
    """Stripes of ``K`` classes drifting a pixel per frame: ``[T, size, size]`` int64."""
    grid = torch.arange(size)[:, None] // 3 + torch.arange(size)[None] // 4
    return torch.stack([(grid.roll(t + shift, 1)) % LabelsToImage.K for t in range(frames)])


def test_a_label_map_generator_gets_taps_distils_and_evaluates_on_clips_of_label_maps():
    torch.manual_seed(0)
    gen, clip = LabelsToImage().eval(), _label_clip()
    x = clip[:1]
    sv = shortcutify(gen, example_inputs=x)  # automatic taps: the label map is moved as a frame is
    assert {n for t in list_taps(gen, x) for n in (t.name, *t.modules)} >= {sv.config.enc_layer, sv.config.dec_layer}
    before = {k: v.clone() for k, v in sv.block.state_dict().items()}
    hist = distill(sv, [clip, _label_clip(shift=3)], steps=2, batch_size=2, crop=8, flip=True, val_clips=[clip], progress=False)
    assert len(hist.losses["total"]) == 2 and all(torch.isfinite(torch.tensor(hist.losses["total"])))
    assert any(not torch.equal(v, before[k]) for k, v in sv.block.state_dict().items())
    report = evaluate(sv, [clip], progress=False)
    assert report.shortcut_frames > 0 and report.nan_frames == 0
    with torch.no_grad():
        assert torch.equal(sv.run_keyframe(x).output, gen(x))


def test_a_label_map_is_moved_as_a_frame_for_suggestions_only_where_no_input_is_a_frame():
    from shortcutify.core.suggest import _frame_pairs

    labels, frame = _label_clip()[:1], torch.randn(1, 3, 16, 16)
    ((_, moved),) = _frame_pairs((labels,), None)
    assert moved[0].dtype == torch.int64 and torch.equal(moved[0][:, 2:, 2:], labels[:, :-2, :-2])
    ((_, moved),) = _frame_pairs((frame, labels), None)  # beside a frame (e.g. a mask): the frame alone moves
    assert torch.equal(moved[1], labels) and torch.equal(moved[0][:, :, 2:, 2:], frame[:, :, :-2, :-2])
    with pytest.raises(InputMismatchError, match=r"frames=\(clip, ...\)\).*give shortcutify\(\) the taps"):
        _frame_pairs((torch.randn(1, 7),), None)
