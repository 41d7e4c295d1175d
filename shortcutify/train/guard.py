"""Finiteness checks of one distillation step, made before the optimiser applies it.

A step whose inputs, loss or gradients are not finite raises ``FloatingPointError`` and
leaves the block as it was before the step (parameters untouched, buffers restored,
gradients dropped), so that a diverging run never corrupts the block it trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .clips import Pairs

__all__ = ["StepGuard"]

_LISTED = 4  # how many bad frames / parameters a message names


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


class StepGuard:
    """Checks the steps of one :func:`~shortcutify.distill` run of ``block`` at learning rate ``lr``.

    Per step: :meth:`start` with the drawn pairs before anything runs on them, :meth:`teacher` with the
    teacher's outputs and taps on them, then :meth:`check` with the step's losses after ``backward()`` and
    before ``opt.step()``.
    """

    def __init__(self, block: nn.Module, lr: float) -> None:
        self.block, self.lr = block, lr
        self.params = [(n, p) for n, p in block.named_parameters() if p.requires_grad]
        self.step = 0
        self.first: int | None = None  # the run's first step (after a resume: the first one taken here)
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
        self.first = step if self.first is None else self.first
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

    def teacher(self, pairs: Pairs, keyframes: Any, targets: Any, compared: Callable[[Any], Any]) -> None:
        """Check what the loss reads of the teacher on the step's reference and current frames: the tap values
        and ``compared(output)`` (the image ``output=`` selects, or the whole output) of ``keyframes`` and
        ``targets`` (:class:`~shortcutify.core.module.KeyframeOutput` of each). Non-finite ones on finite frames
        come from the generator, not from the training. One device sync when all are finite."""
        rows = len(pairs.origins)

        def read(computed: Any) -> list[torch.Tensor]:
            return [
                v.detach() for v in tree_flatten([compared(computed.output), computed.enc, computed.dec])[0]
                if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0 and v.shape[0] == rows
            ]

        sides = [read(keyframes), read(targets)]
        flat = [v for side in sides for v in side]
        try:
            fine = bool(torch.stack([torch.isfinite(v).all() for v in flat]).all()) if flat else True
        except RuntimeError:  # (values on several devices)
            fine = all(bool(torch.isfinite(v).all()) for v in flat)
        if fine:
            return
        bad: list[tuple[int, int]] = []
        for which, values in enumerate(sides):
            finite = torch.stack([torch.isfinite(v).flatten(1).all(1).cpu() if v.dim() > 1 else torch.isfinite(v).cpu() for v in values]).all(0)
            for row in (~finite).nonzero().flatten().tolist():
                clip, ref, cur = pairs.origins[row]
                frame = ref if which == 0 else cur
                if (clip, frame) not in bad:
                    bad.append((clip, frame))
        where = _listed([f"clip {c} frame {f}" for c, f in sorted(bad)])
        self._fail(
            f"the generator's output or tap values are not finite (NaN or Inf) at step {self.step} on finite "
            f"frames: {where}. The teacher itself computes them there (run it on those frames to see: float16 "
            "overflow, a log or division at 0, ...); leave those frames out of the clips or fix the generator. "
            "The training itself did not diverge"
        )

    def check(self, terms: dict[str, float], total: float) -> None:
        """Check the step's loss (its weighted ``terms`` and their ``total``) and the block's gradients."""
        if not math.isfinite(total):
            listed = ", ".join(f"{k}={v:.4g}" for k, v in {**terms, "total": total}.items())
            if self.step == self.first:  # (nothing can have diverged yet)
                self._fail(
                    f"the loss is not finite at step {self.step}, the run's first ({listed}), with finite inputs and "
                    "teacher values: the shortcut frame's output or a loss term is not finite for the block as given "
                    "(the generator's layers after the decoder tap on the block's prediction, a perceptual loss, or a "
                    "block loaded with non-finite weights)"
                )
            self._fail(f"the loss is not finite at step {self.step} ({listed}) with finite inputs: the training "
                       f"diverged; lower lr (now {self.lr:g}) or the loss weights")
        grads = [(n, p.grad) for n, p in self.params if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for _, g in grads]).all()):
            names = [n for n, g in grads if not bool(torch.isfinite(g).all())]
            if self.step == self.first:  # (nothing can have diverged yet)
                self._fail(
                    f"the gradients of {_listed(names)} are not finite at step {self.step}, the run's first, while its "
                    f"inputs and loss ({total:.4g}) are: a layer between the block and the loss gives non-finite "
                    "gradients for finite values (in the generator's layers after the decoder tap, or a perceptual "
                    "loss: torch.where over a NaN or Inf branch, sqrt or pow at 0, ...); make it differentiable there"
                )
            self._fail(f"the gradients of {_listed(names)} are not finite at step {self.step} while its inputs and "
                       f"loss ({total:.4g}) are: the training diverged; lower lr (now {self.lr:g})")
