"""The on-disk format of a saved shortcut block: only the small learned part (as in PEFT).

A saved block is a directory with ``shortcut_block.pt`` (the block's ``state_dict``, read
with ``weights_only=True`` so that loading never runs code) and ``shortcut_config.json``
(the :class:`Manifest`: the :class:`~shortcutify.core.config.ShortcutConfig`, the policy,
the example input shapes, the library version and a signature of the teacher's graph).
This module reads and writes that format; building a module from it is
:func:`shortcutify.load`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from ..errors import IncompatibleCheckpointError
from ..version import __version__
from .config import ShortcutConfig

__all__ = ["Manifest", "ExampleInput", "graph_fingerprint", "write_saved", "read_manifest", "read_weights", "atomic_write", "teacher_checksum", "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT"]

CONFIG_NAME = "shortcut_config.json"
WEIGHTS_NAME = "shortcut_block.pt"
FORMAT = 2  # 2: the block at half the decoder tap's resolution (format-1 blocks do not fit it)


def graph_fingerprint(signature: tuple[str, ...] | list[str]) -> str:
    """A short hash of a graph signature (:func:`shortcutify.core.cut.graph_signature`)."""
    return hashlib.sha256("\n".join(signature).encode()).hexdigest()[:16]


def teacher_checksum(model: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the teacher's parameters and buffers, in state_dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float64 if t.is_floating_point() else t.dtype).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        graph_signature: the teacher's graph signature with the taps marked.
        library_version: the shortcutify version that saved it.
    """

    config: ShortcutConfig
    interval: int
    policy: dict[str, Any]
    example_inputs: tuple[ExampleInput, ...]
    teacher: str
    teacher_checksum: str
    graph_signature: tuple[str, ...]
    library_version: str = __version__

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
            "graph_fingerprint": self.graph_fingerprint,
            "graph_signature": list(self.graph_signature),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "the config") -> Manifest:
        """Parse and check :meth:`to_dict`'s output.

        Raises:
            IncompatibleCheckpointError: not a shortcutify config, another format, or malformed.
        """
        if not isinstance(d, dict) or d.get("library") != "shortcutify":
            raise IncompatibleCheckpointError(f"{where} is not a shortcutify config")
        if d.get("format") != FORMAT:
            raise IncompatibleCheckpointError(
                f"{where} holds a format-{d.get('format')} block (shortcutify {d.get('library_version')}); "
                f"this version reads format {FORMAT}, whose block has another architecture. Distil the block again "
                "with this version (the teacher is unchanged), or load it with the version that saved it."
            )
        try:
            return cls(
                config=ShortcutConfig.from_dict(d),
                interval=int(d["interval"]),
                policy=dict(d["policy"]),
                example_inputs=tuple(ExampleInput(tuple(int(v) for v in e["shape"]), str(e["dtype"])) for e in d["example_inputs"]),
                teacher=str(d["teacher"]),
                teacher_checksum=str(d["teacher_checksum"]),
                graph_signature=tuple(str(line) for line in d["graph_signature"]),
                library_version=str(d.get("library_version")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleCheckpointError(f"{where} is malformed ({type(exc).__name__}: {exc}); save the block again") from exc


def write_saved(path: str | os.PathLike[str], manifest: Manifest, state: dict[str, Tensor]) -> Path:
    """Write a block's ``state`` and ``manifest`` to the directory ``path`` (created if needed)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cpu_state = {k: v.detach().cpu() for k, v in state.items()}
    atomic_write(out / WEIGHTS_NAME, lambda fh: torch.save(cpu_state, fh))
    atomic_write(out / CONFIG_NAME, lambda fh: fh.write(json.dumps(manifest.to_dict(), indent=1).encode()))
    return out


def _files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    src = Path(path)
    cfg_file, w_file = src / CONFIG_NAME, src / WEIGHTS_NAME
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise FileNotFoundError(f"no saved shortcut block at {src}: {f.name} is missing (write one with sv.save(path))")
    return cfg_file, w_file


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """The :class:`Manifest` of the saved block in the directory ``path``.

    Raises:
        FileNotFoundError: ``path`` holds no saved block.
        IncompatibleCheckpointError: the config is not valid JSON, of another format, or malformed.
    """
    cfg_file, _ = _files(path)
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise IncompatibleCheckpointError(f"{cfg_file} is not valid JSON: {exc}") from exc
    return Manifest.from_dict(d, where=str(cfg_file))


def read_weights(path: str | os.PathLike[str], map_location: str | torch.device | None = None) -> dict[str, Tensor]:
    """The block ``state_dict`` saved in the directory ``path`` (``weights_only=True``)."""
    _, w_file = _files(path)
    return torch.load(w_file, map_location=map_location, weights_only=True)
