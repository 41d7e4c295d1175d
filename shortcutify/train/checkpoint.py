"""Distillation checkpoints: everything a resumed run needs to continue exactly.

``checkpoint.pt`` holds the step, the block, optimiser and schedule states, every
process's random generator state, the discriminators, the history and the *run record*
(:func:`run_record`: what defines the run, checked on resume); written atomically by
rank 0, read with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import os
import warnings
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.storage import CHECKPOINT_NAME, atomic_write, graph_fingerprint, teacher_checksum
from ..errors import IncompatibleCheckpointError
from .history import History

__all__ = ["CHECKPOINT_NAME", "TrainingState", "prepare_dir", "run_record"]


def prepare_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and check that checkpoints can be written there; their path.

    Writes and removes a probe file, so that an unusable directory fails before training.

    Raises:
        OSError: (the subclass of the cause) naming the directory.
    """
    d = Path(directory)
    path = d / CHECKPOINT_NAME
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".{CHECKPOINT_NAME}.probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        message = f"checkpoint_dir {d} cannot be created or written ({exc.strerror or exc}); pass a writable directory"
        raise (OSError(exc.errno, message) if exc.errno else OSError(message)) from exc
    if path.exists() and not path.is_file():
        raise IsADirectoryError(errno.EISDIR, f"checkpoint_dir {d}: {path} is not a file, no checkpoint can be written there")
    return path


def run_record(sv: Any, *, world: int, **arguments: Any) -> dict[str, Any]:
    """What defines a :func:`~shortcutify.distill` run, as saved in its checkpoints.

    The teacher (parameter checksum and graph fingerprint), the block config and keyframe
    interval, the number of processes and the ``arguments`` that change the result (lr,
    betas, batch_size, steps, weights, crop, flip, seed, bf16), as plain values.
    """
    plain = {k: asdict(v) if is_dataclass(v) else list(v) if isinstance(v, tuple) else v for k, v in arguments.items()}
    return {
        "teacher_checksum": teacher_checksum(sv.teacher),
        "graph_fingerprint": graph_fingerprint(sv.graph_signature),
        "block": sv.config.to_dict(),
        "interval": sv.policy.interval,
        "world": world,
        **plain,
    }


def _differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``"name: checkpoint <saved>, this run <current>"`` for each entry that differs (dicts entry by entry)."""
    out = []
    for key in dict.fromkeys([*saved, *current]):
        a, b = saved.get(key, "(none)"), current.get(key, "(none)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, this run {b!r}")
    return out


@dataclass
class TrainingState:
    """The objects whose state a checkpoint holds (all owned by one :func:`~shortcutify.distill` run).

    ``record``: this run's :func:`run_record`, saved with every checkpoint and compared on resume.
    """

    block: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    generator: torch.Generator
    adversaries: Any
    history: History
    record: dict[str, Any] = field(default_factory=dict)
    # the best validated block so far (keep_best): {"step": int, "psnr": float, "block": state dict}, or None
    best: dict[str, Any] | None = None

    def save(self, path: Path, step: int, rng_states: list[torch.Tensor]) -> None:
        """Write the checkpoint of ``step`` to ``path`` atomically (``rng_states``: every process's, in rank order)."""
        state = {
            "step": step,
            "run": self.record,
            "block": self.block.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "rng": rng_states,
            "discs": self.adversaries.state_dict(),
            "history": self.history.to_dict(),
        }
        if self.best is not None:
            state["best"] = self.best
        atomic_write(path, lambda fh: torch.save(state, fh))

    def _check(self, path: Path, state: dict[str, Any], steps: int, world: int) -> None:
        """Refuse a checkpoint that does not continue this run (nothing is loaded yet)."""
        step = int(state["step"])
        problems = [f"it is at step {step}, past this run's steps={steps}"] if step > steps else []
        if "run" in state:
            differences = _differences(state["run"], self.record)
            problems += [d for d in differences if not (step > steps and d.startswith("steps:"))]  # said above
        elif len(state["rng"]) != world:
            problems.append(f"it was written by {len(state['rng'])} process(es), this run has {world}")
        else:
            warnings.warn(
                f"checkpoint {path} has no run record (written before shortcutify kept one): resuming without "
                "checking that it was written for this teacher, block and arguments",
                stacklevel=4,
            )
        if problems:
            raise IncompatibleCheckpointError(
                f"checkpoint {path} is not from this run, resume=True refuses it:\n  " + "\n  ".join(problems)
                + "\nResume with the arguments it was written with, or start afresh (resume=False or another checkpoint_dir)"
            )

    def restore(self, path: Path, device: torch.device, rank: int, world: int, steps: int) -> int:
        """Load the checkpoint at ``path`` into these objects; returns its step.

        Raises:
            IncompatibleCheckpointError: (a ``ValueError``) the checkpoint is of another run
                (:func:`run_record`), is past ``steps``, or its block does not fit; nothing is
                loaded then.
        """
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except Exception as exc:  # a damaged archive raises OSError, EOFError, RuntimeError, UnpicklingError...
            raise IncompatibleCheckpointError(
                f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "it is damaged: delete it and start afresh (resume=False), or resume from a copy"
            ) from exc
        missing = [k for k in ("step", "block", "opt", "sched", "rng", "history") if not isinstance(state, dict) or k not in state]
        if missing:
            raise IncompatibleCheckpointError(f"checkpoint {path} lacks {missing}: it is not a distill() checkpoint or is damaged")
        self._check(path, state, steps, world)
        damaged = (
            "it is damaged: delete it and start afresh (resume=False), or resume from a copy; the block is left as it was"
        )
        try:  # (read before anything is loaded)
            restored = History.from_dict(state["history"])
            best = state.get("best")  # (checkpoints before 0.27, and runs without validation, have none)
            if best is not None and not (isinstance(best, dict) and {"step", "psnr", "block"} <= set(best)):
                raise TypeError(f"its best block is a {type(best).__name__} without step, psnr and block")
            rng = state["rng"][rank]
            if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
                raise TypeError(f"the random state of process {rank} is a {type(rng).__name__}, not a uint8 tensor")
        except Exception as exc:  # noqa: BLE001  (IndexError, KeyError, TypeError, AttributeError, ...)
            raise IncompatibleCheckpointError(
                f"checkpoint {path}: its history or random state cannot be read ({type(exc).__name__}: {exc}); {damaged}"
            ) from exc
        before = {k: v.clone() for k, v in self.block.state_dict().items()}
        try:
            self.block.load_state_dict(state["block"])
            self.opt.load_state_dict(state["opt"])
            self.sched.load_state_dict(state["sched"])
        except (RuntimeError, ValueError, KeyError) as exc:
            self.block.load_state_dict(before)
            raise IncompatibleCheckpointError(
                f"checkpoint {path}: its block does not fit this module's block "
                f"({type(self.block).__name__}): {exc}"
            ) from exc
        try:
            self.generator.set_state(rng.cpu())
            self.adversaries.load_state_dict(state.get("discs", {}))
        except Exception as exc:  # noqa: BLE001  (RuntimeError "Invalid mt19937 state", a discriminator's KeyError, ...)
            self.block.load_state_dict(before)
            raise IncompatibleCheckpointError(
                f"checkpoint {path}: its random state or discriminators cannot be restored ({type(exc).__name__}: {exc}); {damaged}"
            ) from exc
        self.history.losses, self.history.val, self.history.kept = restored.losses, restored.val, restored.kept
        self.best = best
        return int(state["step"])
