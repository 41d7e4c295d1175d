"""A saved block survives an interrupted save, and damaged or hand-edited files are reported, never raw errors."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from shortcutify import IncompatibleCheckpointError, load, shortcutify
from shortcutify.core import storage
from shortcutify.core.storage import CONFIG_NAME, WEIGHTS_NAME
from shortcutify.demo.models import ResnetGenerator

OLD_LAYOUT = Path(__file__).parent / "data" / "format2-half"  # saved before the config named its weights file


def _sv(seed):
    torch.manual_seed(0)
    gen = ResnetGenerator(ngf=8, n_blocks=2)
    sv = shortcutify(gen, "model.4", "model.12", torch.zeros(1, 3, 16, 16), interval=4)
    torch.manual_seed(seed)
    for p in sv.block.parameters():  # stands in for a distilled block
        torch.nn.init.normal_(p, std=0.1)
    return gen, sv


def _outputs(sv):
    sv.reset()
    g = torch.Generator().manual_seed(3)
    return [sv(torch.randn(1, 3, 16, 16, generator=g)) for _ in range(3)]


def _saved_weights(directory):
    """The weights file the config names (``shortcut_block.pt`` in configs that name none)."""
    return directory / json.loads((directory / CONFIG_NAME).read_text()).get("weights_file", WEIGHTS_NAME)


def _fail_at(monkeypatch, step):
    """Make the next save fail (or be interrupted) at ``step``: after the new weights are on disk, or while serialising them."""
    if step == "config rename":  # the last step: the rename of the config over the old one
        real = os.replace

        def replace(src, dst, *a, **k):
            if Path(dst).name == CONFIG_NAME:
                raise OSError(28, "No space left on device")
            return real(src, dst, *a, **k)

        monkeypatch.setattr(storage.os, "replace", replace)
    elif step == "config write interrupted":  # Ctrl-C while the config's temporary file is being written
        real_fsync = os.fsync

        def fsync(fd):
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{CONFIG_NAME}"):
                raise KeyboardInterrupt
            real_fsync(fd)

        monkeypatch.setattr(storage.os, "fsync", fsync)
    else:  # serialising the weights fails
        def save(*a, **k):
            raise RuntimeError("disk quota exceeded")

        monkeypatch.setattr(storage.torch, "save", save)


@pytest.mark.parametrize("step", ["config rename", "config write interrupted", "weights serialisation"])
def test_an_interrupted_save_keeps_the_previous_block_and_leaves_no_temporary_file(tmp_path, monkeypatch, step):
    if step == "config write interrupted" and not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the config's file descriptor")
    gen, old = _sv(seed=1)
    old.save(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    expected = _outputs(old)
    _, new = _sv(seed=2)
    assert not torch.equal(_outputs(new)[1], expected[1])  # the new block differs from the old one
    _fail_at(monkeypatch, step)
    with pytest.raises((OSError, KeyboardInterrupt, RuntimeError)):
        new.save(tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file, no orphaned weights
    again = load(gen, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(again), expected))


def test_a_save_leaves_one_config_and_the_one_weights_file_it_names(tmp_path):
    gen, sv = _sv(seed=1)
    sv.save(tmp_path)
    first = _saved_weights(tmp_path)
    _, sv2 = _sv(seed=2)
    sv2.save(tmp_path)
    second = _saved_weights(tmp_path)
    assert first.name != second.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, second.name])
    sv2.save(tmp_path)  # the same block again: same weights file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, second.name])
    assert all(torch.equal(a, b) for a, b in zip(_outputs(load(gen, tmp_path)), _outputs(sv2)))


def test_a_save_deletes_the_replaced_weights_and_old_orphans_only(tmp_path):
    """Two saves into one directory at once: while A's weights are written but its config not yet, B commits. B must
    not delete A's weights (before: it deleted every weights file no config named, so A's config then named a
    deleted file), nor a file of the user's that looks like weights; it deletes the weights of the block it replaced."""
    gen, a = _sv(seed=1)
    _, b = _sv(seed=2)
    a.save(tmp_path)
    replaced = _saved_weights(tmp_path)
    users = tmp_path / "shortcut_block.pt"
    users.write_bytes(b"the user's own file")
    in_flight = tmp_path / "shortcut_block.0123456789abcdef.pt"  # a concurrent save's weights, before its config
    in_flight.write_bytes(b"weights not yet committed")
    b.save(tmp_path)
    assert not replaced.exists()
    assert users.read_bytes() == b"the user's own file" and in_flight.read_bytes() == b"weights not yet committed"
    assert all(torch.equal(x, y) for x, y in zip(_outputs(load(gen, tmp_path)), _outputs(b)))
    # left by a save killed before its commit, long ago: the next save sweeps it (not the user's file)
    old = in_flight.stat().st_mtime - 2 * storage.ORPHAN_AGE_S
    os.utime(in_flight, (old, old))
    os.utime(users, (old, old))
    a.save(tmp_path)
    assert not in_flight.exists() and users.exists()


def test_saving_over_a_block_of_the_old_layout_replaces_it(tmp_path):
    shutil.copytree(OLD_LAYOUT, tmp_path / "blk")
    gen, sv = _sv(seed=1)
    sv.save(tmp_path / "blk")
    assert not (tmp_path / "blk" / WEIGHTS_NAME).exists()
    assert sorted(p.name for p in (tmp_path / "blk").iterdir()) == sorted(["expected.pt", CONFIG_NAME, _saved_weights(tmp_path / "blk").name])
    assert all(torch.equal(a, b) for a, b in zip(_outputs(load(gen, tmp_path / "blk")), _outputs(sv)))


@pytest.fixture
def saved(tmp_path):
    """A saved block, its generator, and its weights file."""
    gen, sv = _sv(seed=1)
    sv.save(tmp_path)
    return gen, tmp_path, _saved_weights(tmp_path)


def _damage_weights(how, w_file):
    data = w_file.read_bytes()
    if how == "truncated":
        w_file.write_bytes(data[: len(data) // 2])
    elif how == "truncated at the end":
        w_file.write_bytes(data[:-10])
    elif how == "empty":
        w_file.write_bytes(b"")
    elif how == "not a checkpoint":
        w_file.write_bytes(b"hello world" * 5)
    elif how == "a list of tensors":
        torch.save([torch.zeros(1)], w_file)
    elif how == "a dict of numbers":
        torch.save({"conv.weight": 1.0}, w_file)
    elif how == "a tensor":
        torch.save(torch.zeros(3), w_file)


@pytest.mark.parametrize(
    "how", ["truncated", "truncated at the end", "empty", "not a checkpoint", "a list of tensors", "a dict of numbers", "a tensor"]
)
def test_a_damaged_weights_file_is_reported_by_name(saved, how):
    gen, path, w_file = saved
    _damage_weights(how, w_file)
    with pytest.raises(IncompatibleCheckpointError, match=rf"{w_file.name}.*sv\.save"):
        load(gen, path)


def _edit(cfg, how):
    if how == "policy without n":
        cfg["policy"] = {"type": "FixedInterval"}
    elif how == "policy with n = 0":
        cfg["policy"]["n"] = 0
    elif how == "policy with n as a word":
        cfg["policy"]["n"] = "four"
    elif how == "interval as a string":
        cfg["interval"] = "4"
    elif how == "example dtype unknown":
        cfg["example_inputs"][0]["dtype"] = "float33"
    elif how == "graph signature as a string":
        cfg["graph_signature"] = "x"
    elif how == "teacher checksum as a number":
        cfg["teacher_checksum"] = 12345
    elif how == "weights file outside the directory":
        cfg["weights_file"] = "../elsewhere.pt"
    return cfg


@pytest.mark.parametrize(
    "how",
    [
        "policy without n",
        "policy with n = 0",
        "policy with n as a word",
        "interval as a string",
        "example dtype unknown",
        "graph signature as a string",
        "teacher checksum as a number",
        "weights file outside the directory",
    ],
)
def test_a_hand_edited_config_is_reported_by_name(saved, how):
    gen, path, _ = saved
    cfg_file = path / CONFIG_NAME
    cfg_file.write_text(json.dumps(_edit(json.loads(cfg_file.read_text()), how)))
    with pytest.raises(IncompatibleCheckpointError, match=r"(?s)shortcut_config\.json.*sv\.save"):
        load(gen, path)


@pytest.mark.parametrize("content, kind", [("[1, 2]", "array"), ('"shortcut"', "string"), ("null", "null")])
def test_a_config_that_is_not_a_json_object_says_what_it_holds(saved, content, kind):
    gen, path, _ = saved
    (path / CONFIG_NAME).write_text(content)
    with pytest.raises(IncompatibleCheckpointError, match=rf"shortcut_config\.json holds a JSON {kind}, not an object.*sv\.save"):
        load(gen, path)


def test_a_format_given_as_a_string_is_reported_with_its_type(saved):
    gen, path, _ = saved
    cfg_file = path / CONFIG_NAME
    cfg = json.loads(cfg_file.read_text())
    cfg["format"] = "2"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(IncompatibleCheckpointError) as info:
        load(gen, path)
    message = str(info.value)
    assert '"format": "2"' in message and "string" in message and "format-2 block" not in message


def test_a_config_that_is_not_utf8_is_reported_by_name(saved):
    gen, path, _ = saved
    (path / CONFIG_NAME).write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(IncompatibleCheckpointError, match=CONFIG_NAME.replace(".", r"\.")):
        load(gen, path)


def test_a_failed_atomic_write_removes_its_temporary_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")

    def write(fh):
        fh.write(b"half of it")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        storage.atomic_write(target, write)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"] and target.read_bytes() == b"old"


def _argument_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5)
    scalars = scalars | st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool])
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3),
        max_leaves=8,
    )


def _same(a, b):
    """Equal, and of the same types all the way down (a tuple is not a list, True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_fixed_arguments_of_numpy_number_types_are_stored_as_numbers():
    import numpy as np

    stored, unstored = storage.encode_fixed_args({"a": np.float64(0.5), "b": np.int64(3), "c": np.bool_(True), "d": (np.float32(2.0),)})
    assert unstored == ()
    assert _same(storage.decode_fixed_args(json.loads(json.dumps(stored))), {"a": 0.5, "b": 3, "c": True, "d": (2.0,)})


def test_fixed_arguments_survive_json_with_their_types():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=6), _argument_values(), max_size=4))
    def check(fixed):
        stored, unstored = storage.encode_fixed_args(fixed)
        assert unstored == ()
        assert _same(storage.decode_fixed_args(json.loads(json.dumps(stored))), fixed)

    check()


class _Mode(__import__("enum").IntEnum):
    A = 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1: 2}, {"a": object()}, [torch.zeros(1)], {"__tuple__", 1}, _Mode.A])
def test_fixed_arguments_json_cannot_hold_are_named_not_stored(value):
    stored, unstored = storage.encode_fixed_args({"keep": (1, "a"), "bad": value})
    assert unstored == ("bad",) and stored == {"keep": {"__tuple__": [1, "a"]}}


@pytest.mark.parametrize(
    "other, cause",
    [
        (lambda: __import__("shortcutify.demo.models", fromlist=["Vid2VidGenerator"]).Vid2VidGenerator(), "missing 1 required positional argument"),
        (lambda: ResnetGenerator(in_ch=1, ngf=8, n_blocks=2), "to have 1 channels"),
    ],
    ids=["other-arguments", "other-channels"],
)
def test_load_onto_a_generator_that_cannot_run_the_saved_inputs_names_them(tmp_path, other, cause):
    _sv(0)[1].save(tmp_path)
    with pytest.raises(IncompatibleCheckpointError, match=rf"saved for a ResnetGenerator taking 1 input\(s\) of shapes \[\[1, 3, 16, 16\]\].*{cause}"):
        load(other(), tmp_path)


def test_load_given_a_file_of_the_saved_block_names_its_directory(tmp_path):
    _sv(0)[1].save(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"is a file of a saved block: give its directory, load\(model, '{tmp_path}'\)"):
        load(ResnetGenerator(ngf=8, n_blocks=2), tmp_path / CONFIG_NAME)


def test_weights_whose_bytes_changed_on_disk_are_refused_by_their_checksum(saved):
    """A weights file is named by its content's SHA-256: a file that still reads as tensors but holds other bytes
    (an edit, bit rot in a tensor's data) is refused, not loaded with other weights."""
    gen, path, w_file = saved
    state = torch.load(w_file, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1.0
    torch.save(state, w_file)
    with pytest.raises(IncompatibleCheckpointError, match=rf"{w_file.name} does not hold the bytes it was saved with.*sv\.save"):
        load(gen, path)
