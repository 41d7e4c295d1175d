"""Distillation checkpoints: everything a resumed run needs to continue exactly.

``checkpoint.pt`` holds the step, the block, optimiser and schedule states, every
process's random generator state, the discriminators and the history; written atomically
by rank 0, read with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.storage import atomic_write
from .history import History

__all__ = ["CHECKPOINT_NAME", "TrainingState"]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainingState:
    """The objects whose state a checkpoint holds (all owned by one :func:`~shortcutify.distill` run)."""

    block: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    generator: torch.Generator
    adversaries: Any
    history: History

    def save(self, path: Path, step: int, rng_states: list[torch.Tensor]) -> None:
        """Write the checkpoint of ``step`` to ``path`` atomically (``rng_states``: every process's, in rank order)."""
        state = {
            "step": step,
            "block": self.block.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "rng": rng_states,
            "discs": self.adversaries.state_dict(),
            "history": self.history.to_dict(),
        }
        atomic_write(path, lambda fh: torch.save(state, fh))

    def restore(self, path: Path, device: torch.device, rank: int, world: int) -> int:
        """Load the checkpoint at ``path`` into these objects; returns its step.

        Raises:
            ValueError: the checkpoint was written by another number of processes.
        """
        state = torch.load(path, map_location=device, weights_only=True)
        if len(state["rng"]) != world:
            raise ValueError(f"checkpoint was written by {len(state['rng'])} process(es), this run has {world}")
        self.block.load_state_dict(state["block"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.generator.set_state(state["rng"][rank].cpu())
        self.adversaries.load_state_dict(state.get("discs", {}))
        restored = History.from_dict(state["history"])
        self.history.losses, self.history.val = restored.losses, restored.val
        return int(state["step"])
