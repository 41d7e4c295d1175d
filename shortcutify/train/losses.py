"""The distillation losses: what a shortcut frame is trained to match.

* ``feature``: L1 between the predicted and the true decoder-tap features (default 1; paper 5);
* ``alignment``: L1 between the prediction from the warped reference alone and the true
  features (default 0, off; paper 5);
* ``output``: L1 between the shortcut frame's output and the teacher's (10); the gradient
  reaches the block through the frozen layers after the decoder tap;
* ``perceptual``: any callable ``perceptual(student_image, teacher_image) -> scalar`` (10);
* ``adversarial`` / ``temporal``: optional LSGAN terms from a PatchGAN on single frames and
  from a temporal discriminator on (previous, current) output pairs (off by default),
  kept by :class:`Adversaries`.

The defaults were chosen on ``benchmarks/distill_teachers.py`` (many teachers, several seeds each): the
paper's weights, :meth:`LossWeights.paper`, with the paper's learning rate gained nothing over
repeating the keyframe on most teachers there. A new loss term is a field of
:class:`LossWeights` and a few lines in :func:`student_terms`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import is_real
from ..core.outputs import floating_leaves
from .discriminators import PatchDiscriminator, lsgan_loss
from .distributed import wrap

__all__ = ["LossWeights", "student_terms", "Adversaries"]


@dataclass
class LossWeights:
    """Weights of the distillation losses (0 turns a term off); :meth:`paper` gives the paper's.

    Attributes:
        feature: L1 between the block's prediction of the decoder tap and the teacher's tap on the current frame.
        alignment: L1 between the block's aligned reference (before its correction) and that same tap.
        output: L1 between the shortcut frame's output and the teacher's (every floating tensor of the
            output, or the image ``distill(output=)`` names).
        perceptual: the ``perceptual=`` callable on the two images (needs ``perceptual``).
        adversarial: LSGAN term of a PatchGAN discriminator on single output images.
        temporal: LSGAN term of a discriminator on (keyframe output, current output) pairs.
    """

    feature: float = 1.0
    alignment: float = 0.0
    output: float = 10.0
    perceptual: float = 10.0
    adversarial: float = 0.0
    temporal: float = 0.0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in asdict(self).items() if not is_real(v) or v < 0}
        if bad:
            raise ValueError(f"loss weights must be finite numbers >= 0 (0 turns a term off), got {bad}")

    def to_dict(self) -> dict[str, float]:
        """The weights by term, JSON-ready (:meth:`from_dict` reads it back)."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> LossWeights:
        """From :meth:`to_dict`'s output (or a dict of some of the terms; the others keep their defaults).

        Raises:
            TypeError: ``d`` is not a dict. ValueError: an unknown term, or a weight that is not a finite number >= 0.
        """
        if not isinstance(d, dict):
            raise TypeError(f"LossWeights.from_dict takes a dict of weights by term, got {type(d).__name__}")
        return cls.coerce(d)

    @classmethod
    def paper(cls) -> LossWeights:
        """The paper's weights: feature 5, alignment 5, output 10, perceptual 10 (the defaults before 0.5)."""
        return cls(feature=5.0, alignment=5.0, output=10.0, perceptual=10.0)

    @classmethod
    def coerce(cls, weights: LossWeights | dict[str, float] | None) -> LossWeights:
        """``weights`` as :class:`LossWeights` (a dict gives some of its fields), checked: every weight a finite
        number >= 0 (ValueError), whichever form it came in."""
        if isinstance(weights, LossWeights):
            w = weights
        else:
            if weights is not None and not isinstance(weights, dict):
                raise TypeError(f"weights must be a LossWeights, a dict of its fields or None, got {type(weights).__name__}")
            unknown = set(weights or {}) - set(asdict(cls()))
            if unknown:
                raise ValueError(f"unknown loss term(s) {sorted(unknown)}; the terms are {sorted(asdict(cls()))}")
            w = cls(**(weights or {}))
        if any(not is_real(v) or v < 0 for v in asdict(w).values()):
            raise ValueError(f"weights must be finite numbers >= 0, got {asdict(w)}")
        return cls(**{k: float(v) for k, v in asdict(w).items()})

    def without(self, *names: str) -> LossWeights:
        """A copy with the named terms turned off."""
        return LossWeights(**{**asdict(self), **{n: 0.0 for n in names}})


def l1_outputs(student: Any, teacher: Any) -> Tensor:
    """Mean L1 over the floating tensors of two outputs of the same structure."""
    s, t = floating_leaves(student), floating_leaves(teacher)
    return sum(F.l1_loss(a, b) for a, b in zip(s, t)) / max(len(s), 1)  # type: ignore[return-value]


def student_terms(
    w: LossWeights,
    *,
    feature: Tensor,
    aligned: Tensor | None,
    target_feature: Tensor,
    output: Any,
    target_output: Any,
    image: Tensor,
    target_image: Tensor,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None,
) -> dict[str, Tensor]:
    """The weighted reconstruction terms of one step (GAN terms: :meth:`Adversaries.student_terms`)."""
    terms: dict[str, Tensor] = {}
    if w.feature:
        terms["feature"] = w.feature * F.l1_loss(feature.float(), target_feature.float())
    if w.alignment:
        if aligned is None:
            raise ValueError("the alignment term needs the block's aligned prediction (run_shortcut(return_aligned=True))")
        terms["alignment"] = w.alignment * F.l1_loss(aligned.float(), target_feature.float())
    if w.output:
        terms["output"] = w.output * l1_outputs(output, target_output)
    if w.perceptual and perceptual is not None:
        value = perceptual(image, target_image)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(
                f"perceptual(student_image, teacher_image) must return a scalar tensor (the loss), got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}: reduce it (e.g. .mean())"
            )
        terms["perceptual"] = w.perceptual * value.reshape(())
    return terms


class Adversaries:
    """The discriminators of the optional GAN terms, built on first use, with their optimisers.

    ``"adversarial"`` scores single output images; ``"temporal"`` scores (previous keyframe
    output, current output) pairs stacked on channels. Each is initialised from ``seed`` (and its name),
    so that runs of one seed are the same.
    """

    NAMES = ("adversarial", "temporal")

    def __init__(self, w: LossWeights, device: torch.device, lr: float, betas: tuple[float, float], seed: int = 0) -> None:
        self.weights = {name: getattr(w, name) for name in self.NAMES if getattr(w, name)}
        self.device, self.lr, self.betas, self.seed = device, lr, betas, seed
        self.nets: dict[str, nn.Module] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self._pending: dict[str, Any] = {}

    def _net(self, name: str, channels: int) -> nn.Module:
        if name not in self.nets:
            with torch.random.fork_rng(devices=[]):  # initialised from the run's seed (on the CPU), the global generators left alone
                torch.random.default_generator.manual_seed(self.seed * len(self.NAMES) + self.NAMES.index(name))
                made = PatchDiscriminator(channels)
            net = wrap(made.to(self.device), self.device)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, betas=self.betas)
            if name in self._pending:
                net.load_state_dict(self._pending[name]["net"])
                opt.load_state_dict(self._pending[name]["opt"])
            self.nets[name], self.opts[name] = net, opt
        return self.nets[name]

    @staticmethod
    def _pair(name: str, previous: Tensor, image: Tensor) -> Tensor:
        return image if name == "adversarial" else torch.cat([previous, image], 1)

    def student_terms(self, image: Tensor, previous: Tensor) -> dict[str, Tensor]:
        """The weighted terms that push the student's ``image`` ``[B, C, H, W]`` to look real."""
        terms = {}
        for name, weight in self.weights.items():
            fake = self._pair(name, previous, image)
            terms[name] = weight * lsgan_loss(self._net(name, fake.shape[1])(fake), real=True)
        return terms

    def update(self, image: Tensor, target: Tensor, previous: Tensor, autocast: Any) -> dict[str, Tensor]:
        """One step of every discriminator on detached student and teacher images; their losses as ``D_<name>``."""
        logs = {}
        for name, net in self.nets.items():
            real = self._pair(name, previous, target).detach()
            fake = self._pair(name, previous, image.detach())
            with autocast:
                loss = 0.5 * (lsgan_loss(net(real), True) + lsgan_loss(net(fake), False))
            self.opts[name].zero_grad(set_to_none=True)
            loss.backward()
            self.opts[name].step()
            logs[f"D_{name}"] = loss.detach()
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {k: {"net": d.state_dict(), "opt": self.opts[k].state_dict()} for k, d in self.nets.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore discriminators when they are next built (they are built on first use)."""
        self._pending = dict(state)
