"""The experimental layouts of benchmarks/block_variants.py keep the block protocol (so that the
ablation compares like with like): registered by name, the decoder tap's shape, gradients to
every parameter, and an untrained block that returns the reference feature, as the library's."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from shortcutify.core.blocks import BLOCK_TYPES, ShortcutBlock

_PATH = Path(__file__).parents[1] / "benchmarks" / "block_variants.py"


@pytest.fixture(scope="module")
def variants():
    before = dict(BLOCK_TYPES)
    spec = importlib.util.spec_from_file_location("block_variants", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["block_variants"] = module
    spec.loader.exec_module(module)
    yield module.VARIANTS
    BLOCK_TYPES.clear()
    BLOCK_TYPES.update(before)
    sys.modules.pop("block_variants", None)


def test_every_variant_is_a_registered_block_that_keeps_the_protocol(variants):
    assert len(variants) >= 1
    for cls in variants:
        assert issubclass(cls, ShortcutBlock) and BLOCK_TYPES[cls.resolution] is cls
        torch.manual_seed(0)
        a_ref, f_ref, a = torch.randn(2, 16, 10, 14), torch.randn(2, 12, 10, 14), torch.randn(2, 16, 10, 14)
        untrained = cls(16, 12, width=8)
        with torch.no_grad():
            out = untrained(a, untrained.prepare_reference(a_ref, f_ref), return_aligned=True)
        assert out.feature.shape == f_ref.shape and out.aligned.shape == f_ref.shape, cls.resolution
        torch.testing.assert_close(out.feature, f_ref, atol=1e-5, rtol=0)  # zero-initialised reconstruction

        trained = cls(16, 12, width=8)
        for p in trained.parameters():
            torch.nn.init.normal_(p, std=0.1)
        out = trained(a, trained.prepare_reference(a_ref, f_ref))
        out.feature.square().sum().backward()
        missing = [n for n, p in trained.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, (cls.resolution, missing)
