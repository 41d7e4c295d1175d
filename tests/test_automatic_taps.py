"""Specification of automatic taps: every suggestion wraps and runs, on every capture path."""

import pytest
import torch

from generators import TinyUNet, TwoInputGen
from shortcutify import shortcutify
from shortcutify import suggest_taps
from shortcutify.demo.models import ResnetGenerator


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("which", ["resnet", "unet", "two_inputs"])
def test_every_suggestion_wraps_runs_and_saves_macs(which, capture):
    torch.manual_seed(0)
    if which == "resnet":
        gen, x = ResnetGenerator(ngf=8, n_blocks=2), (torch.randn(1, 3, 32, 32),)
    elif which == "unet":
        gen, x = TinyUNet(), (torch.randn(1, 3, 32, 32),)
    else:
        gen, x = TwoInputGen(), (torch.randn(1, 4, 32, 32), torch.randn(1, 3, 32, 32))
    found = suggest_taps(gen, x, top=3, capture=capture)
    assert 1 <= len(found) <= 3
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
    for s in found:
        assert len(s.enc.shape) == 4 and len(s.dec.shape) == 4 and s.saved_macs > 0
        sv = shortcutify(gen, s.enc_layer, s.dec_layer, x, capture=capture)
        sv(*x)
        out = sv(*(v + 0.01 for v in x))
        assert not sv.last_was_keyframe and type(out) is type(gen(*x))
        assert sv.cost().shortcut.macs < sv.cost().teacher.macs
    assert "enc_layer" in str(found)

