"""What a :func:`~shortcutify.distill` run records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """What a :func:`~shortcutify.distill` run recorded.

    Attributes:
        losses: per step, each weighted loss term and ``"total"``.
        val: one dict per validation: ``step``, ``psnr``, ``ssim`` (dB / [0, 1], shortcut
            frames vs the teacher) and ``psnr_repeat``, ``ssim_repeat`` (repeating the
            keyframe's output, the trivial baseline).
        kept: the step whose block the run returned, where ``keep_best`` chose one validated before the last
            (its validation scored higher on ``val_clips``); ``None`` where the run returned its last block.
    """

    losses: dict[str, list[float]] = field(default_factory=dict)
    val: list[dict[str, float]] = field(default_factory=list)
    kept: int | None = None

    @property
    def steps(self) -> int:
        """Steps recorded (resumed runs included)."""
        return len(self.losses.get("total", []))

    def record(self, logs: dict[str, float]) -> None:
        """Append one step's losses."""
        for k, v in logs.items():
            self.losses.setdefault(k, []).append(v)

    def to_dict(self) -> dict[str, Any]:
        """``{"losses": ..., "val": ..., "kept": ...}`` as plain lists and dicts (what checkpoints hold; :meth:`from_dict`
        reads it)."""
        return {"losses": self.losses, "val": self.val, "kept": self.kept}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """The history :meth:`to_dict` wrote."""
        kept = d.get("kept")  # (histories before 0.27 have none)
        return cls(losses={k: list(v) for k, v in d["losses"].items()}, val=list(d["val"]), kept=None if kept is None else int(kept))

    def summary(self) -> str:
        """A few lines: the mean loss of the first and last tenth of the steps, and each validation."""
        total = self.losses.get("total", [])
        lines = []
        if total:
            k = max(1, len(total) // 10)
            first, last = sum(total[:k]) / k, sum(total[-k:]) / k
            lines.append(f"loss (mean of first/last {k} steps): {first:.4f} -> {last:.4f} over {len(total)} steps")
        for v in self.val:
            lines.append(
                f"step {int(v['step'])}: PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f} "
                f"(repeat keyframe: {v['psnr_repeat']:.2f} dB, {v['ssim_repeat']:.4f})"
            )
        if self.kept is not None:
            lines.append(f"returned the block of step {self.kept} (keep_best: its validation scored highest)")
        return "\n".join(lines)
