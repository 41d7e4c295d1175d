"""Real third-party generator code (diffusers, MONAI; test-only dependencies, randomly
initialised, 32×32 frames) wraps in three lines, runs the eager model's program on keyframes,
saves MACs on shortcut frames, and distils."""

import warnings

import pytest
import torch

from shortcutify import distill, shortcutify, suggest_taps
from shortcutify.core.capture import EXPORT_TOLERANCE
from shortcutify.demo.third_party import MODELS

pytest.importorskip("diffusers")
pytest.importorskip("monai")


@pytest.mark.parametrize("name", list(MODELS))
def test_third_party_generators_wrap_in_three_lines(name):
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.build().eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sv = shortcutify(model, spec.enc, spec.dec, x, interval=2)
    assert sv.config.capture == spec.path
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(sv(x), expected, rtol=EXPORT_TOLERANCE, atol=EXPORT_TOLERANCE)
    out = sv(x + 0.05 * torch.randn_like(x))
    assert not sv.last_was_keyframe and out.shape == expected.shape and torch.isfinite(out).all()
    cost = sv.cost()
    assert cost.shortcut.macs < cost.teacher.macs
    if spec.path == "export":  # the models only export can capture also distil
        hist = distill(sv, [torch.randn(3, 3, 32, 32)], steps=2, batch_size=1, progress=False)
        assert all(torch.isfinite(torch.tensor(hist.losses["total"])))


@pytest.mark.parametrize("name", [n for n, spec in MODELS.items() if spec.path == "fx"])
def test_where_both_paths_capture_they_skip_the_same_work(name):
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.build().eval()
    x = torch.randn(1, 3, 32, 32)
    sf = shortcutify(model, spec.enc, spec.dec, x, capture="fx")
    se = shortcutify(model, spec.enc, spec.dec, x, capture="export")
    cf, ce = sf.cost(), se.cost()
    assert cf.teacher.macs - cf.floor.macs == ce.teacher.macs - ce.floor.macs > 0
    torch.testing.assert_close(se.run_keyframe(x).output, sf.run_keyframe(x).output, rtol=EXPORT_TOLERANCE, atol=EXPORT_TOLERANCE)
    assert not any("_assert" in str(n.target) for n in se.inference_program.graph.nodes)


class _DiTFrame(torch.nn.Module):
    """A diffusers DiT as a frame generator, at a fixed timestep and class."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers import DiTTransformer2DModel

        self.dit = DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=3, num_layers=2, sample_size=16,
            patch_size=2, norm_num_groups=4,
        )
        self.register_buffer("label", torch.tensor([3]))

    def forward(self, x):
        t, label = torch.full((x.shape[0],), 10), self.label.expand(x.shape[0])
        return self.dit(x, timestep=t, class_labels=label, return_dict=False)[0]


def test_a_diffusion_transformers_attention_heads_are_not_suggested_as_feature_maps():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = suggest_taps(_DiTFrame().eval(), torch.randn(1, 3, 16, 16), top=4)
    # (before 0.23 the first suggestion's decoder tap was heads [1, 64, 2, 8]: 64 tokens read as channels)
    assert found and all(tap.shape[2] == tap.shape[3] for s in found for tap in (s.enc, s.dec))
