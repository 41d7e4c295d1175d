"""The public API under random bad arguments and corrupted files (hypothesis).

Every failure must be a ``ShortcutifyError`` or a standard ``TypeError``/``ValueError`` (or
``FileNotFoundError``) whose message names the argument or file at fault — never a raw error
from deep inside torch — and a failed call must leave saved blocks and checkpoints on disk as
they were.
"""

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shortcutify import ShortcutifyError, distill, list_taps, load, shortcutify
from shortcutify.demo.models import ResnetGenerator

ACCEPTED = (ShortcutifyError, TypeError, ValueError, FileNotFoundError)
GEN_SEED = 0
X = torch.zeros(1, 3, 16, 16)


def _gen():
    torch.manual_seed(GEN_SEED)
    return ResnetGenerator(ngf=8, n_blocks=2)


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 2), max_size=3),
    st.just(object()),
)


def _fails_well(call, *names: str) -> None:
    """``call()`` either succeeds or fails with an accepted error naming one of ``names``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except ACCEPTED as exc:
        message = str(exc)
        assert any(n in message for n in names), f"{type(exc).__name__} does not name {names}: {message}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    argument=st.sampled_from(["enc_layer", "dec_layer", "interval", "width", "resolution", "policy", "capture", "leaf_modules"]),
    value=junk,
)
def test_shortcutify_names_a_bad_argument(argument, value):
    kwargs = {"enc_layer": "model.4", "dec_layer": "model.12", "interval": 3}
    kwargs[argument] = value
    enc, dec = kwargs.pop("enc_layer"), kwargs.pop("dec_layer")
    names = {"leaf_modules": ("leaf_module", "torch.fx", "capture"), "policy": ("policy",)}.get(argument, (argument,))
    _fails_well(lambda: shortcutify(_gen(), enc, dec, X, **kwargs), *names, "FixedInterval")


@settings(max_examples=20, deadline=None)
@given(value=junk)
def test_list_taps_names_bad_example_inputs_or_capture(value):
    _fails_well(lambda: list_taps(_gen(), X, capture=value), "capture")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved")
    sv = shortcutify(_gen(), "model.4", "model.12", X, interval=3)
    for p in sv.block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sv.save(path)
    return path


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_corrupted_saved_block_is_refused_naming_the_file(saved, tmp_path_factory, data):
    import shutil

    path = tmp_path_factory.mktemp("corrupt")
    shutil.rmtree(path)
    shutil.copytree(saved, path)
    files = sorted(p for p in path.iterdir())
    victim = data.draw(st.sampled_from(files), label="file")
    raw = victim.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "empty", "garbage"]), label="how")
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)), label="keep")]
    elif how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw = raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :]
    elif how == "empty":
        raw = b""
    else:
        raw = data.draw(st.binary(max_size=64), label="bytes")
    victim.write_bytes(raw)
    before = _digest(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sv = load(_gen(), path)
    except ACCEPTED as exc:
        assert victim.name in str(exc) or str(path) in str(exc), f"{type(exc).__name__} does not name {victim.name}: {exc}"
    else:  # a flipped byte may land where it changes nothing that matters (e.g. inside a float)
        assert torch.isfinite(sv(X)).all() or how == "flip"
    assert _digest(path) == before  # loading never writes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argument=st.sampled_from(["steps", "batch_size", "crop", "val_every", "checkpoint_every"]), value=junk)
def test_distill_names_a_bad_argument_and_leaves_the_block_and_checkpoint_alone(tmp_path_factory, argument, value):
    from generators import moving_clips

    ckpt = tmp_path_factory.mktemp("ckpt")
    sv = shortcutify(_gen(), "model.4", "model.12", X, interval=3)
    clips = moving_clips(n=2, frames=4, size=16)
    distill(sv, clips, steps=1, batch_size=1, progress=False, checkpoint_dir=ckpt)
    on_disk = _digest(ckpt)
    block = {k: v.clone() for k, v in sv.block.state_dict().items()}
    kwargs = {"steps": 1, "batch_size": 1, argument: value}
    try:
        distill(sv, clips, progress=False, checkpoint_dir=ckpt, resume=True, **kwargs)
    except ACCEPTED as exc:
        assert argument in str(exc), f"{type(exc).__name__} does not name {argument}: {exc}"
        assert all(torch.equal(v, block[k]) for k, v in sv.block.state_dict().items())
        assert _digest(ckpt) == on_disk
