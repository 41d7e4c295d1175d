"""Specification of saving only the block and re-attaching it to the user's generator."""

import json
import warnings

import pytest
import torch

from shortcutify import IncompatibleCheckpointError, load, shortcutify
from shortcutify import __version__ as shortcutify_version
from shortcutify.core.storage import CONFIG_NAME, weights_path
from shortcutify.demo.models import ResnetGenerator


def _trained_sv():
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=4)
    for p in sv.block.parameters():  # stands in for a distilled block
        torch.nn.init.normal_(p, std=0.1)
    return gen, sv


def _frames():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(2, 3, 16, 16, generator=g) for _ in range(5)]


def test_round_trip_gives_identical_outputs(tmp_path):
    gen, sv = _trained_sv()
    sv.save(tmp_path / "blk")
    assert sorted(p.name for p in (tmp_path / "blk").iterdir()) == sorted([CONFIG_NAME, weights_path(tmp_path / "blk").name])
    sv2 = load(gen, tmp_path / "blk")
    assert sv2.policy.interval == 4 and sv2.block.width == sv.block.width
    for x in _frames():
        assert torch.equal(sv(x), sv2(x))


def test_a_full_resolution_block_round_trips(tmp_path):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), resolution="full")
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sv.save(tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["resolution"] == "full"
    sv2 = load(gen, tmp_path)
    assert sv2.block.resolution == "full"
    for x in _frames():
        assert torch.equal(sv(x), sv2(x))


def test_only_the_block_is_saved(tmp_path):
    gen, sv = _trained_sv()
    sv.save(tmp_path)
    state = torch.load(weights_path(tmp_path), weights_only=True)
    assert set(state) == set(sv.block.state_dict())
    size = weights_path(tmp_path).stat().st_size
    teacher_bytes = sum(p.numel() * 4 for p in gen.parameters())
    assert size < teacher_bytes / 2
    cfg = json.loads((tmp_path / CONFIG_NAME).read_text())
    for key in ("enc_layer", "dec_layer", "enc_shape", "dec_shape", "width", "interval", "policy", "library_version", "graph_fingerprint"):
        assert key in cfg
    assert cfg["enc_shape"] == [16, 8, 8] and cfg["policy"] == {"type": "FixedInterval", "n": 4}


def test_a_block_of_another_format_is_refused_with_what_to_do(tmp_path):
    gen, sv = _trained_sv()
    sv.save(tmp_path)
    cfg = json.loads((tmp_path / CONFIG_NAME).read_text())
    cfg["format"], cfg["library_version"] = 1, "0.1.0"  # the full-resolution block of 0.1
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleCheckpointError, match=r"format-1 block \(shortcutify 0.1.0\).*Distil the block again"):
        load(gen, tmp_path)


def test_a_fresh_copy_of_the_generator_accepts_the_block(tmp_path):
    gen, sv = _trained_sv()
    sv.save(tmp_path)
    twin = ResnetGenerator(ngf=8, n_blocks=2)
    twin.load_state_dict(gen.state_dict())
    sv2 = load(twin, tmp_path)
    x = _frames()[0]
    assert torch.equal(sv2(x), sv(x))


def test_a_different_generator_is_refused_with_what_differs(tmp_path):
    _, sv = _trained_sv()
    sv.save(tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match=r"(?s)enc tap channels: saved 16, this generator 32.*graph differs"):
        load(ResnetGenerator(ngf=16, n_blocks=2), tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match="graph differs"):
        load(ResnetGenerator(ngf=8, n_blocks=3), tmp_path)  # one more residual block


def test_missing_taps_are_refused(tmp_path):
    _, sv = _trained_sv()
    sv.save(tmp_path)
    from generators import TinyUNet

    with pytest.raises(IncompatibleCheckpointError, match="do not fit"):
        load(TinyUNet(), tmp_path)


def test_a_prior_block_loads_with_the_pooling_of_the_frames_it_was_saved_for(tmp_path):
    """The motion prior's pooling follows the saved block's frame size, not the example_inputs given to load()."""
    from shortcutify.core.blocks import motion_pool_for

    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.randn(1, 3, 352, 336)  # the decoder tap at a quarter: its flow grid pooled by 2
    sv = shortcutify(gen, "model.4", "model.12", x, motion_prior=True)
    sv.save(tmp_path)
    small = torch.randn(1, 3, 16, 24)
    assert motion_pool_for(tuple(sv.dec.shape[-2:])) != motion_pool_for((16, 24))  # the example would change it
    loaded = load(gen, tmp_path, example_inputs=small)
    assert loaded.block.motion_pool == sv.block.motion_pool
    with torch.no_grad():
        frames = [x, x + 0.05 * torch.randn_like(x)]
        for f in frames:
            torch.testing.assert_close(loaded(f), sv(f), rtol=0, atol=0)


def test_a_block_saved_in_float32_loads_onto_the_generator_in_float64(tmp_path):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16)).save(tmp_path)
    loaded = load(gen.double(), tmp_path)  # the default example inputs follow the model's dtype
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in loaded.block.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(x), gen(x))  # a keyframe: the float64 teacher's output
        assert loaded(x).dtype == torch.float64


def test_other_weights_of_the_same_graph_load_with_a_warning(tmp_path):
    _, sv = _trained_sv()
    sv.save(tmp_path)
    with pytest.warns(UserWarning, match="weights differ"):
        load(ResnetGenerator(ngf=8, n_blocks=2), tmp_path)


def test_missing_or_corrupt_files_are_reported(tmp_path):
    with pytest.raises(TypeError, match=r"the generator \(an nn.Module\) first.*got str and ResnetGenerator"):
        load(str(tmp_path), ResnetGenerator(ngf=8, n_blocks=2))  # arguments swapped
    with pytest.raises(FileNotFoundError, match="sv.save"):
        load(ResnetGenerator(ngf=8, n_blocks=2), tmp_path)
    _, sv = _trained_sv()
    sv.save(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(IncompatibleCheckpointError, match="JSON"):
        load(ResnetGenerator(ngf=8, n_blocks=2), tmp_path)


@pytest.mark.parametrize("resolution", ["half", "full"])
def test_blocks_saved_by_the_previous_layout_of_the_package_load_and_run_as_they_did(resolution):
    """tests/data/format2-*: saved by shortcutify 0.2.0 before the package was split into layers."""
    from pathlib import Path

    saved = Path(__file__).parent / "data" / f"format2-{resolution}"
    expected = torch.load(saved / "expected.pt", weights_only=True)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    gen.load_state_dict(expected["teacher"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sv = load(gen, saved)
    ours = [str(w.message) for w in caught if not w.filename.startswith(str(Path(torch.__file__).parent))]
    assert ours == ["block saved by shortcutify 0.2.0, loading with " + shortcutify_version]  # (torch's own deprecations aside)
    assert sv.block.resolution == resolution and sv.policy.interval == 4
    for x, out in zip(expected["frames"], expected["outputs"]):
        # the same numbers up to float32 rounding: the outputs were saved on another CPU, whose
        # convolution kernels round differently (the teacher's own keyframes differ by ~1e-6 there)
        torch.testing.assert_close(sv(x), out, rtol=1e-5, atol=1e-5)


def test_an_early_format_2_block_saved_without_a_resolution_loads_as_half(tmp_path):
    """0.2.0 blocks saved before ``resolution`` was recorded are half-resolution blocks."""
    import shutil
    from pathlib import Path

    saved = Path(__file__).parent / "data" / "format2-half"
    shutil.copytree(saved, tmp_path / "blk")
    cfg = json.loads((tmp_path / "blk" / CONFIG_NAME).read_text())
    del cfg["resolution"]
    (tmp_path / "blk" / CONFIG_NAME).write_text(json.dumps(cfg))
    expected = torch.load(saved / "expected.pt", weights_only=True)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    gen.load_state_dict(expected["teacher"])
    with pytest.warns(UserWarning, match="saved by shortcutify 0.2.0"):
        sv = load(gen, tmp_path / "blk")
    assert sv.block.resolution == "half"
    torch.testing.assert_close(sv(expected["frames"][0]), expected["outputs"][0], rtol=1e-5, atol=1e-5)  # saved on another CPU


def test_a_block_type_registered_at_run_time_is_built_saved_and_loaded(tmp_path, monkeypatch):
    from shortcutify.core.blocks import BLOCK_TYPES, HalfResolutionBlock

    class Custom(HalfResolutionBlock):  # a user's own layout, registered as base.py's docstring says
        resolution = "custom"

    monkeypatch.setitem(BLOCK_TYPES, "custom", Custom)
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), resolution="custom")
    assert type(sv.block) is Custom
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sv.save(tmp_path)
    sv2 = load(gen, tmp_path)
    assert type(sv2.block) is Custom
    for x in _frames():
        assert torch.equal(sv(x), sv2(x))
    monkeypatch.delitem(BLOCK_TYPES, "custom")
    with pytest.raises(IncompatibleCheckpointError, match=r"layout 'custom'.*registered in shortcutify.core.blocks.BLOCK_TYPES before load"):
        load(gen, tmp_path)


class _Scaled(torch.nn.Module):
    """A generator with non-tensor arguments of forward() that a user fixes with concrete_args."""

    def __init__(self):
        super().__init__()
        self.gen = ResnetGenerator(ngf=8, n_blocks=2)

    def forward(self, x, gain=1.0, opts={"shift": 0.0}, size=(16, 16), dtype=torch.float32):  # noqa: B006
        y = self.gen(x) * gain + opts["shift"]
        return torch.nn.functional.interpolate(y, size=size).to(dtype)


def test_the_fixed_arguments_of_forward_are_saved_and_used_by_load(tmp_path):
    """concrete_args fix values the graph computes with; load() without them rebuilds the same programs."""
    torch.manual_seed(0)
    gen, x = _Scaled(), torch.randn(1, 3, 16, 16)
    fixed = {"gain": 0.3, "opts": {"shift": 0.25}, "size": (16, 16), "dtype": torch.float64}
    sv = shortcutify(gen, "gen.model.4", "gen.model.12", x, concrete_args=fixed)
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sv.save(tmp_path)
    sv2 = load(gen, tmp_path)
    with torch.no_grad():
        assert torch.equal(sv2(x), gen(x, **fixed))
        for f in _frames():
            assert torch.equal(sv(f), sv2(f))
    with pytest.warns(UserWarning, match=r"distilled with .*'gain': 0.3.*\['gain'\] differ"):
        other = load(gen, tmp_path, concrete_args={**fixed, "gain": 0.5})
    with torch.no_grad():
        assert torch.equal(other(x), gen(x, **{**fixed, "gain": 0.5}))


def test_a_fixed_argument_json_cannot_hold_must_be_given_to_load(tmp_path):
    import enum

    class Mode(enum.Enum):
        PLAIN = 1
        DOUBLE = 2

    class Moded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gen = ResnetGenerator(ngf=8, n_blocks=2)

        def forward(self, x, mode=Mode.PLAIN):
            y = self.gen(x)
            return y * 2 if mode is Mode.DOUBLE else y

    gen, x = Moded(), torch.randn(1, 3, 16, 16)
    shortcutify(gen, "gen.model.4", "gen.model.12", x, concrete_args={"mode": Mode.DOUBLE}).save(tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match=r"concrete_args fixing \['mode'\].*pass the same concrete_args"):
        load(gen, tmp_path)
    with torch.no_grad():
        assert torch.equal(load(gen, tmp_path, concrete_args={"mode": Mode.DOUBLE})(x), gen(x, mode=Mode.DOUBLE))


def test_a_config_without_fixed_arguments_loads_as_before(tmp_path):
    """Configs written before 0.21 have no "fixed_args": the forward's defaults, as then."""
    gen, sv = _trained_sv()
    sv.save(tmp_path)
    cfg = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert cfg["fixed_args"] == {} and cfg["unsaved_fixed_args"] == []
    del cfg["fixed_args"], cfg["unsaved_fixed_args"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    sv2 = load(gen, tmp_path)
    for x in _frames():
        assert torch.equal(sv(x), sv2(x))
    cfg["fixed_args"] = {"gain": {"__set__": [1]}}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleCheckpointError, match="'fixed_args' must be an object of argument values"):
        load(gen, tmp_path)


@pytest.mark.parametrize("wrap", [torch.nn.DataParallel, torch.compile], ids=["DataParallel", "torch.compile"])
def test_a_block_saved_from_a_wrapped_generator_loads_onto_the_bare_one_and_back(tmp_path, wrap):
    gen, sv = _trained_sv()
    wrapped = wrap(gen)
    on_wrapped = shortcutify(wrapped, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=4)
    assert on_wrapped.teacher is gen  # the generator inside serves
    on_wrapped.block.load_state_dict(sv.block.state_dict())
    on_wrapped.save(tmp_path / "from-wrapped")
    sv.save(tmp_path / "from-bare")
    for loaded in (load(gen, tmp_path / "from-wrapped"), load(wrapped, tmp_path / "from-bare")):
        sv.reset()
        for x in _frames():
            assert torch.equal(sv(x), loaded(x))


def test_loading_by_another_capture_path_names_it(tmp_path):
    gen, sv = _trained_sv()
    sv.save(tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match=r"capture='fx' gave, this load\(\) captured with 'export'.*leave capture out"):
        load(gen, tmp_path, capture="export")


@pytest.mark.parametrize("saved_in, loaded_in", [(torch.float32, torch.bfloat16), (torch.float32, torch.float16), (torch.float16, torch.float32)])
def test_a_generator_cast_to_another_precision_holds_the_same_weights_and_loads_without_a_warning(tmp_path, saved_in, loaded_in):
    """(before: "the generator's weights differ from those the block was distilled from" for a cast of the same
    generator, because the checksum hashed the rounded values); other weights still warn, in any precision. (Not
    covered: a bfloat16 cast against a float16 one, whose roundings of the same weights differ.)"""
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.randn(1, 3, 16, 16)).to(saved_in)
    sv.save(tmp_path)
    gen.to(loaded_in)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(gen, tmp_path)
    other = ResnetGenerator(ngf=8, n_blocks=2).to(loaded_in)
    with pytest.warns(UserWarning, match="weights differ"):
        load(other, tmp_path)
