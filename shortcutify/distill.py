"""``distill(sv, clips)``: train the shortcut block by distillation from the frozen teacher.

Each step draws (reference, current) frame pairs 1..α−1 frames apart (α = the module's
keyframe interval, the gaps met at inference), runs the teacher on both without
autograd, and trains the block so that the shortcut frame matches the teacher:

* ``feature``: L1 between the predicted and the true decoder-tap features (paper: 5);
* ``alignment``: L1 between the prediction from the warped reference alone and the true
  features (5);
* ``output``: L1 between the shortcut frame's output and the teacher's (10); the gradient
  reaches the block through the frozen layers after the decoder tap;
* ``perceptual``: any callable ``perceptual(student_image, teacher_image) -> scalar`` (10);
* ``adversarial`` / ``temporal``: optional LSGAN terms from a PatchGAN on single frames and
  from a temporal discriminator on (previous, current) output pairs (off by default).

Adam (lr 2e-4, betas (0.5, 0.999)) with a linear decay to zero. Runs unchanged under
``torchrun --nproc_per_node=N`` (DistributedDataParallel: each rank draws its own pairs;
rank 0 alone logs, validates and checkpoints).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from .clips import ClipSource, sample_pairs
from .discriminators import PatchDiscriminator, lsgan_loss
from .evaluate import evaluate, output_image
from .io import atomic_write

__all__ = ["LossWeights", "History", "distill", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class LossWeights:
    """Weights of the distillation losses (the paper's defaults; 0 turns a term off)."""

    feature: float = 5.0
    alignment: float = 5.0
    output: float = 10.0
    perceptual: float = 10.0
    adversarial: float = 0.0
    temporal: float = 0.0


@dataclass
class History:
    """What a :func:`distill` run recorded.

    Attributes:
        losses: per step, each weighted loss term and ``"total"``.
        val: one dict per validation: ``step``, ``psnr``, ``ssim`` (dB / [0, 1], shortcut
            frames vs the teacher) and ``psnr_repeat``, ``ssim_repeat`` (repeating the
            keyframe's output, the trivial baseline).
    """

    losses: dict[str, list[float]] = field(default_factory=dict)
    val: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.losses.get("total", []))

    def summary(self) -> str:
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
        return "\n".join(lines)


class _Student(nn.Module):
    """Stands in for the block inside the shortcut program during training.

    ``forward(a, (a_ref, f_ref))`` prepares the reference and predicts, so that every
    block parameter is used inside one forward (as DistributedDataParallel wants).
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, a: Tensor, raw_reference: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
        return self.block(a, self.block.prepare_reference(*raw_reference))


def _l1_outputs(student: Any, teacher: Any) -> Tensor:
    s = [t for t in tree_flatten(student)[0] if isinstance(t, Tensor) and t.is_floating_point()]
    t = [t for t in tree_flatten(teacher)[0] if isinstance(t, Tensor) and t.is_floating_point()]
    return sum(F.l1_loss(a, b) for a, b in zip(s, t)) / max(len(s), 1)  # type: ignore[return-value]


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distill(
    sv: Any,
    clips: Iterable[Any],
    *,
    steps: int = 2000,
    batch_size: int = 4,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    weights: LossWeights | dict[str, float] | None = None,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
    crop: int | tuple[int, int] | None = None,
    flip: bool = False,
    val_clips: Iterable[Any] | None = None,
    val_every: int = 500,
    data_range: float = 2.0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    seed: int = 0,
    progress: bool = True,
    bf16: bool = False,
) -> History:
    """Train ``sv.block`` so that shortcut frames reproduce the teacher's.

    Args:
        sv: a :class:`~shortcutify.ShortcutV2V` (its teacher stays frozen).
        clips: clips ``[T, C, H, W]`` of consecutive frames (tuples of them for a
            multi-input generator): a list, a ``Dataset``, a ``DataLoader`` or any iterable.
        steps: optimisation steps (total, also when resuming).
        batch_size: pairs per step (per process under torchrun).
        lr, betas: Adam settings; the learning rate decays linearly to 0 at ``steps``.
        weights: :class:`LossWeights` or a dict of some of its fields.
        perceptual: optional ``f(student_image, teacher_image) -> scalar`` (images
            ``[B, C, H, W]`` as :func:`~shortcutify.evaluate.output_image` picks them).
        crop: random crop ``h`` or ``(h, w)`` shared by both frames of a pair.
        flip: random horizontal flips shared by both frames of a pair.
        val_clips: held-out clips; PSNR/SSIM of shortcut frames vs the teacher are
            recorded every ``val_every`` steps and at the end.
        data_range: value range of the outputs for PSNR/SSIM (2.0 for [-1, 1]).
        checkpoint_dir: where ``checkpoint.pt`` is written (atomically) every
            ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint_dir/checkpoint.pt``; with the same arguments
            the result equals an uninterrupted run's.
        callback: called as ``callback(step, logs)`` after every step (rank 0 only).
        seed: seeds the pair sampling (rank r uses ``seed`` and ``r``).
        progress: show a progress bar with the running losses.
        bf16: run forward passes under bf16 autocast (CUDA only).

    Returns:
        :class:`History` (per-step losses and validations). On return the block is in
        eval mode and the module's stream state is reset.
    """
    w = weights if isinstance(weights, LossWeights) else LossWeights(**(weights or {}))
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    alpha = sv.policy.interval
    if alpha < 2:
        raise ValueError(
            f"the module's keyframe interval is {alpha}: every frame is a keyframe and there is nothing to "
            "distill. Build it with interval >= 2."
        )
    if w.perceptual > 0 and perceptual is None:
        w = LossWeights(**{**asdict(w), "perceptual": 0.0})
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    crop_hw = (crop, crop) if isinstance(crop, int) else crop

    # torchrun sets these; initialise the process group if the caller has not
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = _dist_info()
    block = sv.block
    device = next(block.parameters()).device
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        sv.to(device)
    if bf16 and device.type != "cuda":
        raise ValueError("bf16=True needs the module on a CUDA device (bf16 autocast is a GPU option)")

    source = ClipSource(clips)
    val_list = list(val_clips) if val_clips is not None else None
    gen = torch.Generator().manual_seed(seed * 1_000_003 + rank)

    student: nn.Module = _Student(block)
    if world > 1:
        student = nn.parallel.DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in block.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    discs: dict[str, nn.Module] = {}
    d_opts: dict[str, torch.optim.Optimizer] = {}

    history = History()
    start = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and rank == 0:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if len(state["rng"]) != world:
            raise ValueError(f"checkpoint was written by {len(state['rng'])} process(es), this run has {world}")
        block.load_state_dict(state["block"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["rng"][rank].cpu())
        start = int(state["step"])
        history = History(losses={k: list(v) for k, v in state["history"]["losses"].items()}, val=list(state["history"]["val"]))
        pending_discs = state.get("discs", {})
    elif resume:
        warnings.warn(f"resume=True but {ckpt_path} does not exist: starting from step 0", stacklevel=2)
        pending_discs = {}
    else:
        pending_discs = {}

    program = sv.shortcut_program
    original = program.shortcut_block
    was_aligned = block.return_aligned

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        states = [gen.get_state()]
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, gen.get_state())
            states = gathered
        if rank == 0:
            state = {
                "step": step,
                "block": block.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": states,
                "discs": {k: {"net": d.state_dict(), "opt": d_opts[k].state_dict()} for k, d in discs.items()},
                "history": {"losses": history.losses, "val": history.val},
            }
            atomic_write(ckpt_path, lambda fh: torch.save(state, fh))

    def validate(step: int) -> None:
        if val_list is None or rank != 0:
            return
        block.eval()
        program.shortcut_block = original
        was = block.return_aligned
        block.return_aligned = False
        try:
            summary = evaluate(sv, val_list, data_range=data_range).summary()
        finally:
            block.return_aligned = was
            program.shortcut_block = student
            block.train()
        history.val.append({"step": float(step), **{k: summary[k] for k in ("psnr", "ssim", "psnr_repeat", "ssim_repeat")}})

    bar = None
    block.return_aligned = w.alignment > 0
    program.shortcut_block = student  # the program now calls block(a, prepare_reference(a_ref, f_ref))
    try:  # from here on, whatever happens, the module is restored in `finally`
        sv.reset()
        block.train()
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, initial=start, desc="distill", unit="step", dynamic_ncols=True)
        running: dict[str, float] = {}
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
        for step in range(start + 1, steps + 1):
            ref_in, cur_in = sample_pairs(source, batch_size, alpha - 1, gen, crop=crop_hw, flip=flip)
            ref_in = tuple(x.to(device, non_blocking=True) for x in ref_in)
            cur_in = tuple(x.to(device, non_blocking=True) for x in cur_in)
            with autocast:
                with torch.no_grad():
                    out_ref, a_ref, f_ref = sv.run_keyframe(*ref_in)
                    out_t, _, f_t = sv.run_keyframe(*cur_in)
                out_s, f_hat, aligned = program(*cur_in, shortcut_reference=(a_ref, f_ref))
                img_s, img_t = output_image(out_s), output_image(out_t)
                terms: dict[str, Tensor] = {}
                if w.feature:
                    terms["feature"] = w.feature * F.l1_loss(f_hat.float(), f_t.float())
                if w.alignment:
                    terms["alignment"] = w.alignment * F.l1_loss(aligned.float(), f_t.float())
                if w.output:
                    terms["output"] = w.output * _l1_outputs(out_s, out_t)
                if w.perceptual and perceptual is not None:
                    terms["perceptual"] = w.perceptual * perceptual(img_s, img_t)
                for name, weight in (("adversarial", w.adversarial), ("temporal", w.temporal)):
                    if not weight:
                        continue
                    if name not in discs:
                        in_ch = img_t.shape[1] * (2 if name == "temporal" else 1)
                        discs[name] = PatchDiscriminator(in_ch).to(device)
                        if world > 1:
                            discs[name] = nn.parallel.DistributedDataParallel(
                                discs[name], device_ids=[device.index] if device.type == "cuda" else None
                            )
                        d_opts[name] = torch.optim.Adam(discs[name].parameters(), lr=lr, betas=betas)
                        if name in pending_discs:
                            discs[name].load_state_dict(pending_discs[name]["net"])
                            d_opts[name].load_state_dict(pending_discs[name]["opt"])
                    fake = img_s if name == "adversarial" else torch.cat([output_image(out_ref), img_s], 1)
                    terms[name] = weight * lsgan_loss(discs[name](fake), real=True)
                total = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
            for name, d in discs.items():  # discriminator updates on detached student frames
                real = img_t if name == "adversarial" else torch.cat([output_image(out_ref), img_t], 1)
                fake = img_s.detach() if name == "adversarial" else torch.cat([output_image(out_ref), img_s.detach()], 1)
                with autocast:
                    d_loss = 0.5 * (lsgan_loss(d(real.detach()), True) + lsgan_loss(d(fake), False))
                d_opts[name].zero_grad(set_to_none=True)
                d_loss.backward()
                d_opts[name].step()
                terms[f"D_{name}"] = d_loss.detach()

            logs = {k: float(v.detach()) for k, v in terms.items()}
            logs["total"] = float(total.detach())  # type: ignore[union-attr]
            if not math.isfinite(logs["total"]):
                raise FloatingPointError(f"distillation diverged at step {step}: losses {logs}; lower lr")
            for k, v in logs.items():
                history.losses.setdefault(k, []).append(v)
                running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in running.items() if not k.startswith("D_")}, refresh=False)
            if callback is not None and rank == 0:
                callback(step, logs)
            if val_list is not None and (step % val_every == 0 or step == steps):
                validate(step)
            if step % checkpoint_every == 0 or step == steps:
                save(step)
    finally:
        if bar is not None:
            bar.close()
        program.shortcut_block = original
        block.return_aligned = was_aligned
        block.eval()
        sv.reset()
    return history
