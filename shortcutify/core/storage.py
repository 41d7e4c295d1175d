"""The on-disk format of a saved shortcut block: only the small learned part (as in PEFT).

A saved block is a directory holding two files:

* ``shortcut_config.json``, the :class:`Manifest`: the
  :class:`~shortcutify.core.config.ShortcutConfig`, the policy, the example input shapes, the
  arguments of ``forward`` the capture fixed (``concrete_args``), the library version, a
  signature of the teacher's graph, and ``weights_file``, the name of the weights file beside it;
* ``shortcut_block.<hash>.pt`` (``<hash>``: the first 16 hex digits of the SHA-256 of its
  bytes), the block's ``state_dict``, read with ``weights_only=True`` so that loading never
  runs code.

The config is the commit point, so that a save replaces the whole block atomically:
:func:`write_saved` writes the new weights under their own name (temporary file, fsync,
rename), then atomically replaces the config that names them, and only then deletes the
weights file the replaced config named (unless a config names it again), and hashed weights files
no config names that are older than :data:`ORPHAN_AGE_S` (left by a save killed before its commit).
Other files are left alone: a concurrent save's weights not yet committed, or a user's own. An interrupted save
leaves the previous block intact (the old config still names the old weights) and removes its
temporary files.

Format-2 blocks saved before ``weights_file`` existed (config without it, weights in
``shortcut_block.pt``) read the same way. Older versions of shortcutify cannot read a block
saved in this layout: they look for ``shortcut_block.pt``.

This module reads and writes that format; building a module from it is
:func:`shortcutify.load`'s job.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import json
import numbers
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import IncompatibleCheckpointError
from ..version import __version__
from .config import ShortcutConfig

__all__ = [
    "Manifest",
    "ExampleInput",
    "graph_fingerprint",
    "write_saved",
    "read_manifest",
    "read_weights",
    "weights_path",
    "atomic_write",
    "teacher_checksum",
    "teacher_checksums",
    "same_weights_rounded",
    "ROUNDINGS",
    "encode_fixed_args",
    "decode_fixed_args",
    "encode_leaf_modules",
    "decode_leaf_modules",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FORMAT",
]

CONFIG_NAME = "shortcut_config.json"
#: the name of the weights files :func:`write_saved` writes (the SHA-256 prefix of their bytes)
_HASHED_WEIGHTS = re.compile(r"shortcut_block\.[0-9a-f]{16}\.pt")
#: a hashed weights file no config names is swept by the next save once it is this old (seconds): older than any
#: save still in progress could leave its weights before committing them
ORPHAN_AGE_S = 3600.0
WEIGHTS_NAME = "shortcut_block.pt"  # the weights of blocks saved before ``weights_file`` (and its default)
CHECKPOINT_NAME = "checkpoint.pt"  # what ``distill(checkpoint_dir=...)`` writes (named here so that load() can tell it)
FORMAT = 2  # 2: the block at half the decoder tap's resolution (format-1 blocks do not fit it)
#: a weights file's name holding the start of its content's SHA-256 (see :func:`write_saved`)
_CHECKSUM_NAME = re.compile(r"shortcut_block\.([0-9a-f]{16})\.pt")
_FIX = "save the block again with sv.save(path), or restore the file"


def graph_fingerprint(signature: tuple[str, ...] | list[str]) -> str:
    """A short hash of a graph signature (:func:`shortcutify.core.cut.graph_signature`)."""
    return hashlib.sha256("\n".join(signature).encode()).hexdigest()[:16]


#: the precisions a teacher's weights are also checksummed in (:func:`teacher_checksums`): a generator cast to one of
#: them (or saved in one and loaded in float32) holds the same weights, rounded
ROUNDINGS = ("bfloat16", "float16")


def _checksums(model: nn.Module, roundings: tuple[str | None, ...]) -> dict[str | None, str]:
    """SHA-256 (first 16 hex digits) of the teacher's parameters and buffers in state_dict order, in one pass, per
    rounding: ``None`` hashes floating values as float64; a name of :data:`ROUNDINGS` hashes them rounded to that
    dtype, as its bits (other tensors as they are)."""
    hashers = {r: hashlib.sha256() for r in roundings}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        for rounded, h in hashers.items():
            h.update(name.encode())
            if not t.is_floating_point():
                h.update(t.contiguous().numpy().tobytes())
            elif rounded is None:
                h.update(t.to(torch.float64).contiguous().numpy().tobytes())
            else:  # (bfloat16 has no numpy type: its bits as int16)
                h.update(t.to(getattr(torch, rounded)).contiguous().view(torch.int16).numpy().tobytes())
    return {r: h.hexdigest()[:16] for r, h in hashers.items()}


def teacher_checksum(model: nn.Module, rounded: str | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the teacher's parameters and buffers, in state_dict order; with
    ``rounded`` (a name of :data:`ROUNDINGS`), of their floating values rounded to that dtype first."""
    return _checksums(model, (rounded,))[rounded]


def teacher_checksums(model: nn.Module) -> tuple[str, dict[str, str]]:
    """:func:`teacher_checksum` of the teacher's weights as they are, and rounded to each of :data:`ROUNDINGS` (by
    name), in one pass."""
    sums = _checksums(model, (None, *ROUNDINGS))
    return sums[None], {r: sums[r] for r in ROUNDINGS}


def same_weights_rounded(model: nn.Module, saved: Mapping[str, str]) -> str | None:
    """The precision (a name of :data:`ROUNDINGS`) in which ``model``'s weights equal the saved teacher's, rounded both
    (a cast of the same weights); ``None`` if in none."""
    return next((name for name in ROUNDINGS if name in saved and teacher_checksum(model, name) == saved[name]), None)


def _fsync_dir(path: Path) -> None:
    """Make the renames in the directory ``path`` durable (best effort: not every platform can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, fsync, then rename over ``path``.

    ``path`` is either left as it was or holds everything ``write`` wrote; the temporary file
    is removed if anything fails (or is interrupted) before the rename.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _json_kind(value: Any) -> str:
    for kind, types in (("null", type(None)), ("boolean", bool), ("number", (int, float)), ("string", str), ("array", list)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_file_name(value: Any) -> bool:
    """A bare file name (no directory part), as ``weights_file`` must be."""
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value and Path(value).name == value


_TUPLE, _DICT, _DTYPE = "__tuple__", "__dict__", "__dtype__"  # how these are marked in JSON (a list stays a list)


def _encode(value: Any) -> Any:
    """``value`` as JSON (tuples, dicts and dtypes marked), or raise ``TypeError`` if it is not one
    :func:`encode_fixed_args` stores."""
    if isinstance(value, enum.Enum):  # (an IntEnum or StrEnum would come back as its value)
        raise TypeError(type(value).__name__)
    if value is None:
        return None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):  # (numpy integers too)
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError("a non-finite float")
        return value
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {_TUPLE: [_encode(v) for v in value]}
    if isinstance(value, dict) and type(value) is dict and all(isinstance(k, str) for k in value):
        return {_DICT: {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {_DTYPE: str(value).replace("torch.", "")}
    raise TypeError(type(value).__name__)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE} and isinstance(value[_TUPLE], list):
            return tuple(_decode(v) for v in value[_TUPLE])
        if set(value) == {_DICT} and isinstance(value[_DICT], dict):
            return {k: _decode(v) for k, v in value[_DICT].items()}
        if set(value) == {_DTYPE} and isinstance(getattr(torch, str(value[_DTYPE]), None), torch.dtype):
            return getattr(torch, value[_DTYPE])
        raise ValueError(f"not a stored argument value: {json.dumps(value)[:80]}")
    return value


def encode_fixed_args(fixed: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The fixed arguments of ``forward`` (``concrete_args``) as JSON, and the names of those that cannot be stored.

    Values made of ``None``, booleans, integers, finite floats, strings, torch dtypes, lists,
    tuples and dicts with string keys are stored (tuples, dicts and dtypes marked, so they come
    back as they were); any other value (an enum, an object) is named in the second item, and
    :func:`shortcutify.load` asks for it.
    """
    stored: dict[str, Any] = {}
    unstored: list[str] = []
    for name, value in fixed.items():
        try:
            stored[name] = _encode(value)
        except TypeError:
            unstored.append(name)
    return stored, tuple(unstored)


#: how a class among the leaf modules is written in a config (a qualified module name is written as it is)
CLASS_PREFIX = "class:"


def encode_leaf_modules(leaves: tuple[type | str, ...]) -> tuple[str, ...]:
    """``leaf_modules`` for a config: names as they are, classes as ``"class:module.QualName"``."""
    return tuple(v if isinstance(v, str) else f"{CLASS_PREFIX}{v.__module__}.{v.__qualname__}" for v in leaves)


def decode_leaf_modules(stored: tuple[str, ...], model: nn.Module) -> tuple[tuple[type | str, ...], tuple[str, ...]]:
    """:func:`encode_leaf_modules` read back against ``model``: the classes are found among its modules' types and
    their base classes (no import; the tracer keeps instances of subclasses opaque too). Returns ``(leaf_modules,
    missing)``: ``missing`` names the classes no module of ``model`` is an instance of."""
    types = {f"{t.__module__}.{t.__qualname__}": t for m in model.modules() for t in type(m).__mro__}
    leaves: list[type | str] = []
    missing: list[str] = []
    for v in stored:
        if not v.startswith(CLASS_PREFIX):
            leaves.append(v)
        elif v[len(CLASS_PREFIX):] in types:
            leaves.append(types[v[len(CLASS_PREFIX):]])
        else:
            missing.append(v[len(CLASS_PREFIX):])
    return tuple(leaves), tuple(missing)


def decode_fixed_args(stored: dict[str, Any]) -> dict[str, Any]:
    """:func:`encode_fixed_args`' first item, read back.

    Raises:
        ValueError: a value is not one :func:`encode_fixed_args` writes.
    """
    return {name: _decode(value) for name, value in stored.items()}


@dataclass(frozen=True)
class ExampleInput:
    """Shape and dtype of one example input (to rebuild zeros of it for tracing)."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, x: Tensor) -> ExampleInput:
        return cls(tuple(x.shape), str(x.dtype).replace("torch.", ""))

    def zeros(self, device: torch.device | str) -> Tensor:
        return torch.zeros(self.shape, dtype=getattr(torch, self.dtype), device=device)


@dataclass(frozen=True)
class Manifest:
    """Everything ``shortcut_config.json`` holds.

    Attributes:
        config: taps and block.
        interval: the policy's keyframe interval α.
        policy: the policy's description (``policy_to_config``).
        example_inputs: the example inputs' shapes and dtypes.
        teacher: the teacher's class name.
        teacher_checksum: :func:`teacher_checksum` of the teacher the block was saved with.
        teacher_checksums: the same, of its weights rounded to each of :data:`ROUNDINGS` (configs before 0.26: none).
        graph_signature: the teacher's graph signature with the taps marked.
        library_version: the shortcutify version that saved it.
        weights_file: the name of the weights file in the same directory (:func:`write_saved`
            sets it; configs without it name ``shortcut_block.pt``).
        fixed_args: the arguments of ``forward`` fixed by ``concrete_args`` when the block was
            made, those that JSON can hold (:func:`encode_fixed_args`; configs without it: none).
        unsaved_args: the names of fixed arguments whose values JSON cannot hold.
        distilled_interval: the keyframe interval the block was last distilled with (``None``:
            unknown, as in configs written before 0.21).
        leaf_modules: the ``leaf_modules`` the generator was captured with: qualified module names, and
            classes as ``"class:module.QualName"`` (:func:`encode_leaf_modules`; configs before 0.22: none).
    """

    config: ShortcutConfig
    interval: int
    policy: dict[str, Any]
    example_inputs: tuple[ExampleInput, ...]
    teacher: str
    teacher_checksum: str
    graph_signature: tuple[str, ...]
    library_version: str = __version__
    weights_file: str = WEIGHTS_NAME
    fixed_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    unsaved_args: tuple[str, ...] = ()
    distilled_interval: int | None = None
    leaf_modules: tuple[str, ...] = ()
    teacher_checksums: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def graph_fingerprint(self) -> str:
        return graph_fingerprint(self.graph_signature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "library": "shortcutify",
            "library_version": self.library_version,
            **self.config.to_dict(),
            "interval": self.interval,
            "policy": dict(self.policy),
            "example_inputs": [{"shape": list(e.shape), "dtype": e.dtype} for e in self.example_inputs],
            "teacher": self.teacher,
            "teacher_checksum": self.teacher_checksum,
            "teacher_checksums": dict(self.teacher_checksums),
            "graph_fingerprint": self.graph_fingerprint,
            "graph_signature": list(self.graph_signature),
            "weights_file": self.weights_file,
            "fixed_args": encode_fixed_args(self.fixed_args)[0],
            "unsaved_fixed_args": list(self.unsaved_args),
            "distilled_interval": self.distilled_interval,
            "leaf_modules": list(self.leaf_modules),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "the config") -> Manifest:
        """Parse and check :meth:`to_dict`'s output.

        Raises:
            IncompatibleCheckpointError: not a shortcutify config, another format, or malformed
                (a missing key or a value of the wrong type); the message names ``where``.
        """
        if not isinstance(d, dict):
            raise IncompatibleCheckpointError(
                f"{where} holds a JSON {_json_kind(d)}, not an object: it is not a shortcutify config; {_FIX}"
            )
        if d.get("library") != "shortcutify":
            raise IncompatibleCheckpointError(
                f"{where} is not a shortcutify config (its \"library\" is {d.get('library')!r}, not 'shortcutify'); {_FIX}"
            )
        fmt = d.get("format")
        if not _is_int(fmt):
            raise IncompatibleCheckpointError(
                f"{where} has \"format\": {json.dumps(fmt)} (a JSON {_json_kind(fmt)}); the format is an integer, and "
                f"this version reads format {FORMAT}: write \"format\": {FORMAT} if the block was saved as format {FORMAT}, "
                f"else {_FIX}"
            )
        if fmt != FORMAT:
            raise IncompatibleCheckpointError(
                f"{where} holds a format-{fmt} block (shortcutify {d.get('library_version')}); "
                f"this version reads format {FORMAT}, whose block has another architecture. Distil the block again "
                "with this version (the teacher is unchanged), or load it with the version that saved it."
            )

        def malformed(problem: str) -> IncompatibleCheckpointError:
            return IncompatibleCheckpointError(f"{where} is malformed: {problem}; {_FIX}")

        def get(key: str, check: Callable[[Any], bool], expected: str) -> Any:
            if key not in d:
                raise malformed(f"it lacks {key!r}")
            if not check(d[key]):
                raise malformed(f"{key!r} must be {expected}, got {json.dumps(d[key])[:80]}")
            return d[key]

        def is_example_input(e: Any) -> bool:
            return (
                isinstance(e, dict)
                and isinstance(e.get("shape"), list)
                and all(_is_int(v) and v >= 0 for v in e["shape"])
                and isinstance(e.get("dtype"), str)
                and isinstance(getattr(torch, e["dtype"], None), torch.dtype)
            )

        try:
            config = ShortcutConfig.from_dict(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed(str(exc)) from exc
        interval = get("interval", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        policy = get("policy", lambda v: isinstance(v, dict), 'an object (such as {"type": "FixedInterval", "n": 3})')
        examples = get(
            "example_inputs",
            lambda v: isinstance(v, list) and all(is_example_input(e) for e in v),
            'a list of {"shape": [non-negative integers], "dtype": a torch dtype name}',
        )
        teacher = get("teacher", lambda v: isinstance(v, str), "a string")
        checksum = get("teacher_checksum", lambda v: isinstance(v, str), "a string")
        signature = get("graph_signature", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings")
        version = d.get("library_version")
        if version is not None and not isinstance(version, str):
            raise malformed(f"'library_version' must be a string, got {json.dumps(version)[:80]}")
        weights_file = d.get("weights_file", WEIGHTS_NAME)
        if not _is_file_name(weights_file):
            raise malformed(f"'weights_file' must be the name of a file beside it, got {json.dumps(weights_file)[:80]}")
        fixed = d.get("fixed_args", {})
        try:
            if not isinstance(fixed, dict):
                raise ValueError(f"got {json.dumps(fixed)[:80]}")
            fixed_args = decode_fixed_args(fixed)
        except ValueError as exc:
            raise malformed(f"'fixed_args' must be an object of argument values: {exc}") from exc
        unsaved = d.get("unsaved_fixed_args", [])
        if not (isinstance(unsaved, list) and all(isinstance(v, str) for v in unsaved)):
            raise malformed(f"'unsaved_fixed_args' must be a list of argument names, got {json.dumps(unsaved)[:80]}")
        distilled = d.get("distilled_interval")
        if distilled is not None and not (_is_int(distilled) and distilled >= 1):
            raise malformed(f"'distilled_interval' must be an integer >= 1 or null, got {json.dumps(distilled)[:80]}")
        rounded = d.get("teacher_checksums", {})
        if not (isinstance(rounded, dict) and all(isinstance(v, str) for v in rounded.values())):
            raise malformed(f"'teacher_checksums' must be an object of strings, got {json.dumps(rounded)[:80]}")
        leaves = d.get("leaf_modules", [])
        if not (isinstance(leaves, list) and all(isinstance(v, str) for v in leaves)):
            raise malformed(f"'leaf_modules' must be a list of module names and classes, got {json.dumps(leaves)[:80]}")
        return cls(
            config=config,
            interval=interval,
            policy=dict(policy),
            example_inputs=tuple(ExampleInput(tuple(e["shape"]), e["dtype"]) for e in examples),
            teacher=teacher,
            teacher_checksum=checksum,
            graph_signature=tuple(signature),
            library_version=str(version),
            weights_file=weights_file,
            fixed_args=fixed_args,
            unsaved_args=tuple(unsaved),
            distilled_interval=distilled,
            leaf_modules=tuple(leaves),
            teacher_checksums=dict(rounded),
        )


def _named_weights(directory: Path) -> str | None:
    """The weights file the config in ``directory`` names now, or ``None`` if it names none readable."""
    try:
        d = json.loads((directory / CONFIG_NAME).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(d, dict):
        return None
    name = d.get("weights_file", WEIGHTS_NAME)
    return name if _is_file_name(name) else None


def write_saved(path: str | os.PathLike[str], manifest: Manifest, state: dict[str, Tensor]) -> Path:
    """Write a block's ``state`` and ``manifest`` to the directory ``path`` (created if needed).

    The block already in ``path`` is replaced as a whole or not at all (see the module
    docstring): an exception or an interrupt leaves it, and no temporary file, behind.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(
            f"{out} is a file; a saved block is a directory (it holds {CONFIG_NAME} and the weights): give a directory path"
        )
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    data = buf.getvalue()
    weights_name = f"shortcut_block.{hashlib.sha256(data).hexdigest()[:16]}.pt"
    config_bytes = json.dumps(dataclasses.replace(manifest, weights_file=weights_name).to_dict(), indent=1).encode()
    previous = _named_weights(out)
    committed = False
    try:
        atomic_write(out / weights_name, lambda fh: fh.write(data))
        atomic_write(out / CONFIG_NAME, lambda fh: fh.write(config_bytes))  # the commit point
        committed = True
    finally:
        if not committed and weights_name != previous:
            (out / weights_name).unlink(missing_ok=True)
    # the weights the replaced config named, and hashed weights files no config names that are older than any save
    # in progress could be (left by a save killed before its commit); not a file a concurrent save may be about to
    # commit, nor one of another name (the user's)
    keep = {weights_name, _named_weights(out)}  # (and what a concurrent save may have committed since)
    stale = [out / previous] if previous is not None and previous not in keep else []
    cutoff = time.time() - ORPHAN_AGE_S
    for f in out.iterdir():
        try:
            if _HASHED_WEIGHTS.fullmatch(f.name) and f.name not in keep and f.stat().st_mtime < cutoff:
                stale.append(f)
        except OSError:
            pass
    for f in stale:
        try:
            f.unlink(missing_ok=True)
        except OSError:
            pass  # a stale weights file is harmless: no config names it
    return out


def _config_file(path: str | os.PathLike[str]) -> Path:
    src = Path(path)
    cfg_file = src / CONFIG_NAME
    if not cfg_file.is_file():
        checkpoint = src if src.is_file() and src.name == CHECKPOINT_NAME else src / CHECKPOINT_NAME
        if checkpoint.is_file():
            raise FileNotFoundError(
                f"{src} holds a distill() checkpoint ({checkpoint.name}), not a saved block: build the module as for "
                f"distill (sv = shortcutify(...)), put the checkpoint's block in it with sv.block.load_state_dict("
                f"torch.load({str(checkpoint)!r}, weights_only=True)['block']), then save it with sv.save(path)"
            )
        if src.is_file() and (src.parent / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{src} is a file of a saved block: give its directory, load(model, {str(src.parent)!r}) (the folder "
                "sv.save() wrote)"
            )
        raise FileNotFoundError(f"no saved shortcut block at {src}: {cfg_file.name} is missing (write one with sv.save(path))")
    return cfg_file


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of the saved block in the directory ``path``.

    Raises:
        FileNotFoundError: ``path`` holds no saved block, or not the weights file its config names.
        IncompatibleCheckpointError: the config is not a JSON object, of another format, or malformed.
    """
    cfg_file = _config_file(path)
    try:
        d = json.loads(cfg_file.read_bytes())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise IncompatibleCheckpointError(f"{cfg_file} is not valid JSON ({exc}); {_FIX}") from exc
    manifest = Manifest.from_dict(d, where=str(cfg_file))
    w_file = cfg_file.parent / manifest.weights_file
    if not w_file.is_file():
        raise FileNotFoundError(
            f"the saved shortcut block at {cfg_file.parent} is incomplete: {w_file.name}, which {cfg_file.name} names, "
            "is missing (write the block again with sv.save(path))"
        )
    return manifest


def weights_path(path: str | os.PathLike[str], manifest: Manifest | None = None) -> Path:
    """The weights file of the saved block in the directory ``path`` (the one its config names)."""
    return Path(path) / (manifest or read_manifest(path)).weights_file


def read_weights(
    path: str | os.PathLike[str], map_location: str | torch.device | None = None, manifest: Manifest | None = None
) -> dict[str, Tensor]:
    """The block ``state_dict`` saved in the directory ``path`` (``weights_only=True``).

    Args:
        path: the saved block's directory.
        map_location: where to put the tensors (default: the CPU, where they were saved).
        manifest: its :func:`read_manifest` (read again if not given).

    Raises:
        FileNotFoundError: ``path`` holds no saved block.
        IncompatibleCheckpointError: the weights file is unreadable (truncated, empty, not a
            checkpoint) or holds something other than a dict of tensors.
    """
    w_file = weights_path(path, manifest)
    try:
        data = w_file.read_bytes()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    named = _CHECKSUM_NAME.fullmatch(w_file.name)  # (an older block's shortcut_block.pt has no checksum to check)
    if named is not None and hashlib.sha256(data).hexdigest()[:16] != named.group(1):
        raise IncompatibleCheckpointError(
            f"{w_file} does not hold the bytes it was saved with (their SHA-256 does not begin with the "
            f"{named.group(1)} in its name): the file changed on disk (an incomplete copy, bit rot, an edit); {_FIX}"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged archive raises any of OSError, EOFError, RuntimeError, KeyError, UnpicklingError...
        raise IncompatibleCheckpointError(
            f"{w_file} cannot be read as block weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}): "
            f"it is truncated or damaged; {_FIX}"
        ) from exc
    if not isinstance(state, dict):
        raise IncompatibleCheckpointError(f"{w_file} holds a {type(state).__name__}, not a block's state_dict (a dict of tensors); {_FIX}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        k = bad[0]
        raise IncompatibleCheckpointError(
            f"{w_file} is not a block's state_dict (a dict of tensors): entry {k!r} holds a {type(state[k]).__name__}; {_FIX}"
        )
    if map_location is not None:
        state = {k: v.to(map_location) for k, v in state.items()}
    return state
