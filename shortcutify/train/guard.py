"""Finiteness checks of one distillation step, made before the optimiser applies it.

A step whose inputs, loss or gradients are not finite raises ``FloatingPointError`` and
leaves the block as it was before the step (parameters untouched, buffers restored,
gradients dropped), so that a diverging run never corrupts the block it trains.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .clips import Pairs

__all__ = ["StepGuard"]

_LISTED = 4  # how many bad frames / parameters a message names


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


class StepGuard:
    """Checks the steps of one :func:`~shortcutify.distill` run of ``block`` at learning rate ``lr``.

    Per step: :meth:`start` with the drawn pairs before anything runs on them, then
    :meth:`check` with the step's losses after ``backward()`` and before ``opt.step()``.
    """

    def __init__(self, block: nn.Module, lr: float) -> None:
        self.block, self.lr = block, lr
        self.params = [(n, p) for n, p in block.named_parameters() if p.requires_grad]
        self.step = 0
        self._buffers: list[torch.Tensor] = []

    def _fail(self, message: str) -> None:
        for buf, saved in zip(self.block.buffers(), self._buffers):
            buf.copy_(saved)
        for _, p in self.params:
            p.grad = None
        raise FloatingPointError(f"{message}. The block is left as it was before step {self.step}")

    def start(self, step: int, pairs: Pairs) -> None:
        """Check the inputs of ``step`` (raises ``FloatingPointError`` naming the clips and frames)."""
        self.step = step
        self._buffers = [b.detach().clone() for b in self.block.buffers()]  # none in the built-in blocks
        batches = (*pairs.reference, *pairs.current)
        if all(bool(torch.isfinite(x).all()) for x in batches):
            return
        bad: list[tuple[int, int]] = []
        for row, (clip, ref, cur) in enumerate(pairs.origins):
            for frame, side in ((ref, pairs.reference), (cur, pairs.current)):
                if not all(bool(torch.isfinite(x[row]).all()) for x in side) and (clip, frame) not in bad:
                    bad.append((clip, frame))
        where = _listed([f"clip {c} frame {f}" for c, f in sorted(bad)])
        self._fail(
            f"the inputs of step {step} are not finite (NaN or Inf): {where}. Fix or leave out these frames; "
            "the training itself did not diverge"
        )

    def check(self, terms: dict[str, float], total: float) -> None:
        """Check the step's loss (its weighted ``terms`` and their ``total``) and the block's gradients."""
        if not math.isfinite(total):
            listed = ", ".join(f"{k}={v:.4g}" for k, v in {**terms, "total": total}.items())
            self._fail(f"the loss is not finite at step {self.step} ({listed}) with finite inputs: the training "
                       f"diverged; lower lr (now {self.lr:g}) or the loss weights")
        grads = [(n, p.grad) for n, p in self.params if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for _, g in grads]).all()):
            names = [n for n, g in grads if not bool(torch.isfinite(g).all())]
            self._fail(f"the gradients of {_listed(names)} are not finite at step {self.step} while its inputs and "
                       f"loss ({total:.4g}) are: the training diverged; lower lr (now {self.lr:g})")
