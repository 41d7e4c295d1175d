"""``distill(sv, clips)``: train the shortcut block by distillation from the frozen teacher.

Each step draws (reference, current) frame pairs 1..α−1 frames apart (α = the module's
keyframe interval, the gaps met at inference), runs the teacher on both without
autograd (:meth:`~shortcutify.ShortcutV2V.run_keyframe`), runs the shortcut frame against the
reference's raw taps (:meth:`~shortcutify.ShortcutV2V.shortcut_step`) and trains the block on
the terms of :mod:`shortcutify.train.losses`. Adam (lr 2e-3, betas (0.5, 0.999)) with a linear
decay to zero (defaults chosen on ``benchmarks/distill_teachers.py``; the paper's lr 2e-4 with
:meth:`~shortcutify.train.losses.LossWeights.paper` is the setting before 0.5). Runs unchanged under ``torchrun --nproc_per_node=N`` (DistributedDataParallel:
each rank draws its own pairs; rank 0 alone logs, validates and checkpoints).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler

from ..core.blocks import PRIOR_LEFT_OUT_EVERY
from ..core.capture import unwrap
from ..core.checks import channels_last_inputs, check_flag, is_count, is_real, refuse_untensored
from ..core.module import ShortcutV2V
from ..core.outputs import OutputSelector, check_selector, output_image
from ..errors import GradientError, InputMismatchError, OutputSelectionError
from . import distributed
from .checkpoint import CHECKPOINT_NAME, TrainingState, prepare_dir, run_record
from .clips import ClipSource, as_clip, check_clips, check_inputs, each_clip, refuse_single_clip, sample_pairs, to_inputs
from .evaluate import compare_clips
from .guard import StepGuard
from .history import History
from .interrupt import DeferredInterrupt
from .losses import Adversaries, LossWeights, student_terms
from .metrics import check_data_range
from .start import resolve_data_init, start_from_frames

__all__ = ["distill", "CHECKPOINT_NAME"]

#: a run whose last validation PSNR is this much (dB) below its step 0's warns that the steps made the block worse
WORSE_THAN_START_DB = 0.1
#: ``keep_best`` returns an earlier validated block where the last validation's PSNR is more than this (dB) below it
#: (closer than that, validations differ by noise: the last block, trained longest, is kept)
KEEP_BEST_MARGIN_DB = 0.1


def _backward(total: Tensor, sv: ShortcutV2V) -> None:
    """``total.backward()``, see :func:`_inplace_named`."""
    with _inplace_named(sv):
        total.backward()


@contextlib.contextmanager
def _inplace_named(sv: ShortcutV2V) -> Iterator[None]:
    """Autograd within: an in-place op that keeps it from the block (usually in the generator's layers after the
    decoder tap) is named, with the fix."""
    try:
        yield
    except RuntimeError as exc:
        if "modified by an inplace operation" not in str(exc):
            raise
        raise GradientError(
            "an op overwrote in place a tensor that autograd needs, so the loss cannot reach the block: "
            f"{str(exc).splitlines()[0]}\nThe usual place is the generator's layers after dec_layer "
            f"{sv.config.dec_layer!r}, which distill backpropagates through (a VAE's exp(logvar).add_(mu); the "
            "generator itself cannot backpropagate there either): pick a dec_layer after that op, or make it out of "
            "place (x = x + y); else a perceptual loss you passed."
        ) from exc


def _refuse_unreached(terms: dict[str, Tensor], image: Tensor, output: Any) -> None:
    """Refuse loss terms that do not depend on the block: they compare an image the shortcut frame computes
    outside the layers it skips (an early stage's image of a multi-stage generator), so they train nothing.
    (A term on ``image`` is judged by the image: a perceptual network or a discriminator has weights of its own.)"""
    on_image = {"perceptual", "adversarial", "temporal", *(("output",) if output is not None else ())}
    unreached = [name for name, value in terms.items() if not value.requires_grad or (name in on_image and not image.requires_grad)]
    if unreached == ["perceptual"] and image.requires_grad:  # (the image reaches the block: the loss itself ignores it)
        raise OutputSelectionError(
            "the perceptual loss does not depend on the student image it is given (its value has no gradient: a constant, "
            "a detached tensor, or the arguments read the other way round?): perceptual must be f(student_image, "
            "teacher_image) -> a scalar computed from student_image"
        )
    if unreached:
        which = "the generator's output (no output= given)" if output is None else f"the image output={output!r} names"
        raise OutputSelectionError(
            f"the loss term(s) {unreached} do not depend on the shortcut block: they compare {which}, which a shortcut "
            "frame computes outside the layers it replaces (an early stage's image, a pass-through input), so they "
            "cannot train it. Name the generator's final image with output= (a key, an index or a function), or "
            "give those terms weight 0."
        )


def _refuse_gradient_free(terms: dict[str, Tensor], params: list[Tensor], dec_layer: str) -> bool:
    """Name the loss terms whose gradient reaches the block as exactly zero (checked at a run's first step with a
    loss to learn from): a layer between the block and the loss passes no gradient as captured, so they train
    nothing. A warning when other terms train the block; :class:`GradientError` when none does (the block as given
    is kept). Returns whether the terms were judged: not when every term is exactly 0 (pairs of still frames, which
    the block as built reproduces exactly: nothing to learn on this batch, so no gradient), which leaves the check
    to a later step."""
    if all(not bool(value.detach().ne(0).any()) for value in terms.values()):
        return False
    free = [
        name for name, value in terms.items()
        if value.requires_grad and all(
            g is None or not bool(g.any()) for g in torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        )
    ]
    if not free:
        return True
    message = (
        f"the loss term(s) {free} give the block exactly zero gradient: a layer between the block and the loss passes "
        f"no gradient as the generator was captured (round, argmax, a threshold; or a custom torch.autograd.Function "
        f"in the layers after dec_layer {dec_layer!r}, whose backward torch.fx and torch.export do not keep: they record "
        "its forward only), so they train nothing. Pick a dec_layer after that layer, give those terms weight 0, or "
        "make the layer differentiable in the generator"
    )
    if len(free) == len(terms):
        raise GradientError(message + "; no term trains the block.")
    warnings.warn(message + ".", RuntimeWarning, stacklevel=3)
    return True


def _perceptual_chosen(weights: LossWeights | dict[str, float] | None) -> bool:
    """Whether the caller chose the perceptual term's weight: named in a dict, or set to other than the
    default in a :class:`LossWeights` (the default weight applies only when ``perceptual=`` is given)."""
    if isinstance(weights, dict):
        return "perceptual" in weights
    return isinstance(weights, LossWeights) and weights.perceptual != LossWeights.perceptual


@contextlib.contextmanager
def _crop_named(crop: tuple[int, int] | None) -> Iterator[None]:
    """An :class:`InputMismatchError` of the generator on cropped frames, raised again naming the crop."""
    try:
        yield
    except InputMismatchError as exc:
        if crop is None:
            raise
        raise InputMismatchError(
            f"crop={crop} gives frames of a size the generator cannot run ({exc}). Choose a crop it takes (a multiple "
            "of its downsampling factor, a size its position embeddings take), or leave crop out"
        ) from exc


def _crop(crop: Any) -> tuple[int, int] | None:
    """``crop`` as ``(h, w)`` (``None`` stays ``None``)."""
    if crop is None:
        return None
    pair = (crop, crop) if is_count(crop) else tuple(crop) if isinstance(crop, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(is_count(v) for v in pair):
        raise ValueError(f"crop must be a positive integer or a pair (h, w) of them, got {crop!r}")
    return int(pair[0]), int(pair[1])


def _check_callback(callback: Any) -> None:
    """Refuse a callback that is not callable, or whose signature cannot take ``(step, logs)`` (checked before the
    first step, not after it)."""
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(f"callback must be a function callback(step, logs) or None, got {type(callback).__name__}")
    refusals = []
    for follow in (True, False):  # (a decorator's own signature, and the one it wraps: either may be the call's)
        try:
            signature = inspect.signature(callback, follow_wrapped=follow)
        except (TypeError, ValueError):  # (some builtins have none: left to the call)
            return
        try:
            signature.bind(0, {})
            return
        except TypeError as exc:
            refusals.append(f"callback{signature} ({exc})")
    raise TypeError(
        f"{refusals[0]} cannot be called as callback(step, logs): distill() calls it after every step with the "
        "step number and a dict of that step's losses"
    )


def _check_arguments(sv: Any, resume: bool, checkpoint_dir: Any, lr: Any, callback: Any, **counts: Any) -> int:
    """Validate the arguments (``counts``: the ones that must be positive integers); returns the keyframe interval α."""
    if not isinstance(sv, ShortcutV2V):
        raise TypeError(f"distill() trains a ShortcutV2V (from shortcutify()), got {type(sv).__name__}")
    refuse_untensored(sv.example_inputs, sv.teacher, "distill()")
    for name, value in counts.items():
        if not is_count(value):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(lr, Tensor) and lr.numel() == 1 and lr.is_floating_point():  # (Adam takes a tensor learning rate)
        lr_value: Any = float(lr)
    else:
        lr_value = lr
    if isinstance(lr_value, bool) or not isinstance(lr_value, numbers.Real) or not math.isfinite(lr_value) or lr_value < 0:
        raise ValueError(f"lr must be a finite number >= 0 (the learning rate; default 2e-3), got {lr!r}")
    _check_callback(callback)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a directory path (a str or os.PathLike) or None, got {type(checkpoint_dir).__name__}")
    if checkpoint_dir is not None and not os.fspath(checkpoint_dir):
        raise ValueError("checkpoint_dir is empty: give a directory (\".\" for the current one), or None for no checkpoints")
    alpha = sv.policy.interval
    if alpha < 2:
        raise ValueError(
            f"the module's keyframe interval is {alpha}: every frame is a keyframe and there is nothing to "
            "distill. Build it with interval >= 2."
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    return alpha


#: the end-of-run advice where the steps did not beat the block as the run started it
_LITTLE_TO_LEARN = (
    "Where the current frame reaches the output past the taps (a U-Net's skips, a global residual, a branch around "
    "the cut), the block as built can already beat repeat by far and leave little to learn: try taps that skip more "
    "(suggest_taps(..., frames=a clip)), more steps, or keep a block saved before."
)


def _keep_best(sv: ShortcutV2V, run: TrainingState, rank: int, world: int, keep_best: bool) -> None:
    """At the end of a run with ``keep_best``: where rank 0 validated (``run.best`` set) and the last validation
    scored more than :data:`KEEP_BEST_MARGIN_DB` below the best one (or not at all: NaN), put the best block back
    and record its step as ``run.history.kept``. Under torchrun every process calls this (rank 0 decides) and ends
    with rank 0's block."""
    best, val = run.best, run.history.val
    kept = None
    if rank == 0 and keep_best and best is not None and val and int(best["step"]) != int(val[-1]["step"]):
        if not val[-1]["psnr"] >= best["psnr"] - KEEP_BEST_MARGIN_DB:  # (NaN: not >=)
            kept = int(best["step"])
    kept = distributed.from_rank_0(kept)
    if kept is None:
        return
    if rank == 0:
        sv.block.load_state_dict(best["block"])  # type: ignore[index]
    distributed.broadcast_state(sv.block)
    run.history.kept = kept


def distill(
    sv: ShortcutV2V,
    clips: Iterable[Any],
    *,
    steps: int = 2000,
    batch_size: int = 4,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    weights: LossWeights | dict[str, float] | None = None,
    perceptual: Callable[[Tensor, Tensor], Tensor] | None = None,
    crop: int | tuple[int, int] | None = None,
    flip: bool = False,
    val_clips: Iterable[Any] | None = None,
    val_every: int = 500,
    data_range: float | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    seed: int = 0,
    progress: bool = True,
    bf16: bool = False,
    data_init: bool | Literal["auto"] = "auto",
    output: OutputSelector = None,
    keep_best: bool = True,
) -> History:
    """Train ``sv.block`` so that shortcut frames reproduce the teacher's.

    Args:
        sv: a :class:`~shortcutify.ShortcutV2V` (or one wrapped by ``torch.compile``: the module inside). Its
            teacher stays frozen: parameters set to require grad after ``shortcutify()`` are frozen for the run
            (with a warning) and given back as they were.
        clips: clips ``[T, C, H, W]`` of consecutive frames (tuples of them for a
            multi-input generator, one tensor per example input): a list, a ``Dataset``, a
            ``DataLoader`` or any iterable; floating frames in the generator's value range (moved
            to the module's device and floating dtype per batch).
        steps: optimisation steps (total, also when resuming; a run cannot be extended: a checkpoint of a run
            with other ``steps`` is refused, since the learning rate decays over them).
        batch_size: pairs per step (per process under torchrun).
        lr, betas: Adam settings; the learning rate decays linearly to 0 at ``steps``.
        weights: :class:`LossWeights` or a dict of some of its fields. The perceptual term's default
            weight applies only when ``perceptual`` is given; a perceptual weight chosen without it
            (named in a dict, or not the default in a ``LossWeights``) is refused (ValueError).
        perceptual: optional ``f(student_image, teacher_image) -> scalar`` (images
            ``[B, C, H, W]`` as ``output`` picks them).
        crop: random crop ``h`` or ``(h, w)`` shared by both frames of a pair. Without it
            all clips must have one frame size (every clip is indexed once, up front, to check).
            In the first frames' pixels: the frames inputs of a multi-input generator are cropped to the
            same region, scaled to each input's size (an input at half the first's size needs an
            even crop; see :func:`~shortcutify.train.clips.crop_steps`).
        flip: random horizontal flips shared by both frames of a pair.
        val_clips: held-out clips; PSNR/SSIM of shortcut frames vs the teacher are
            recorded before the first step (the block as the run starts it: step 0, not for a resumed run),
            every ``val_every`` steps and at the end. A run ending below its step 0, or below repeating
            the keyframe, warns (``RuntimeWarning``). See ``keep_best``.
        data_range: width of the outputs' value range for PSNR/SSIM (2.0 for [-1, 1], 1.0 for [0, 1]); None: 2.0,
            with a warning (once) when the teacher's outputs on ``val_clips`` do not look like [-1, 1].
        checkpoint_dir: where ``checkpoint.pt`` is written (atomically) every
            ``checkpoint_every`` steps and at the end; created, and checked writable, up front.
        resume: continue from ``checkpoint_dir/checkpoint.pt``; with the same arguments
            the result equals an uninterrupted run's. A checkpoint records its run (teacher
            checksum and graph fingerprint, block config and keyframe interval, lr, betas,
            batch_size, steps, loss weights, crop, flip, seed, bf16, number of processes);
            one of another run, one past ``steps``, or one whose block does not fit is
            refused, naming each difference, before anything is loaded. The clips and
            ``perceptual`` cannot be recorded: keep them the same. A checkpoint written
            before runs were recorded is resumed with a warning (only its step, process
            count and block shapes are checked), and its next save records this run.
        callback: called as ``callback(step, logs)`` after every step (rank 0 only).
        seed: seeds the pair sampling (rank r uses ``seed`` and ``r``) and the discriminators' initial weights.
            The block's own initial weights are drawn by ``shortcutify()`` from torch's global generator: call
            ``torch.manual_seed`` before it for a run that repeats exactly.
        progress: show a progress bar with the running losses.
        bf16: run forward passes under bf16 autocast (CUDA only).
        data_init: before the first step (not when resuming), set the block's decoder-tap
            reduction from the teacher's taps on :data:`~shortcutify.train.start.DATA_INIT_FRAMES`
            training frames (:meth:`~shortcutify.core.blocks.ShortcutBlock.init_reductions`:
            their principal components, raised so that ReLU passes them); ``"auto"`` (default) does
            so for an untrained block and keeps a trained block's reductions (fine-tuning).
        output: which part of the generator's output is the image
            (:data:`~shortcutify.core.outputs.OutputSelector`: a key of a dict output, an index into a tuple, or
            a function ``f(output) -> [B, C, H, W]``): the output loss, the perceptual and GAN terms and the
            validations compare that image only. None (default): the output loss compares every floating tensor
            of the output, the other terms and the validations the first floating ``[B, C, H, W]`` leaf
            (:func:`~shortcutify.core.outputs.output_image`). A function cannot be recorded in checkpoints: keep
            it the same when resuming.
        keep_best: with ``val_clips``, return the block of the validation that scored the highest PSNR (step 0
            included: the block as the run started it) where the last one scored lower by more than
            :data:`KEEP_BEST_MARGIN_DB` (or NaN), with a warning, and
            record its step as ``History.kept`` (the best block so far travels with the checkpoints). ``False``:
            always the last block. Without ``val_clips``, no effect.

    Returns:
        :class:`History` (per-step losses and validations). On return, also after an
        error, the block is in eval mode and the module's stream state is reset; once a step
        was applied, ``sv.distilled_interval`` is the policy's interval it trained for (a policy
        set later with a longer interval warns).

    Raises:
        ValueError: bad arguments or clips (``lr`` negative or not finite, mixed frame sizes without ``crop``, clips
            of fewer than 2 frames, ``val_clips`` of one frame each, a crop larger than some clip or of a size the generator
            cannot run (``InputMismatchError``, before the first step is applied), another number of tensors per
            clip than example inputs, a float16 block: Adam cannot train float16 weights), before the first step.
        TypeError: a clip's frames are not floating point (``uint8`` video: scale it to the
            generator's value range first), ``clips`` is a single clip tensor or not a collection, a
            clip is not tensors, an example input is not a tensor (``InputTypeError``: fix it with
            ``concrete_args``), ``seed`` is not an integer, ``output`` is not a selector, ``callback`` cannot be
            called as ``callback(step, logs)``, or ``sv`` is not a module; before the first step.
        OutputSelectionError: (a ``ValueError``) ``output`` names no image of the generator's output, or it holds
            none, or a weighted loss term compares an image the shortcut frame does not change (an early stage's
            image: name the final one with ``output``); raised in the first step, before it is applied (the block
            is left as it was given).
        OSError: ``checkpoint_dir`` cannot be created or written, before the first step (an empty path is a
            ValueError, one not a str or path a TypeError).
        IncompatibleCheckpointError: (a ``ValueError``) ``resume`` found a checkpoint of
            another run (see ``resume``).
        FloatingPointError: a step's inputs or the teacher's outputs and taps on them (naming the clips and
            frames), its loss or gradients are not finite; checked before the optimiser applies the step, so
            the block is left exactly as after the last good step (checkpoints or not), or
            as it was given when no step was applied (the data-dependent start undone).
        KeyboardInterrupt: Ctrl-C (SIGINT, in the main thread of a single-process run) is taken at the end of the
            step it arrives in, after that step's checkpoint is written (with ``checkpoint_dir``), so that
            ``resume=True`` continues exactly; a second Ctrl-C interrupts at once.
        GradientError: (a ``RuntimeError``) an in-place op in the layers after the decoder tap
            keeps autograd from reaching the block, or at the run's first step every loss term's gradient
            reaches it as exactly zero (a ``round()``, or a custom ``autograd.Function`` captured as its
            forward); the block is left as above.

    Warns:
        RuntimeWarning: at the run's first step, some loss terms' gradients reach the block as exactly zero
            (they train nothing; the others do); at the end, the returned block's shortcut frames are below
            repeating the keyframe, the block of an earlier validation is returned (``keep_best``), or (without
            ``keep_best``) the last is below the block the run started from.
    """
    sv = unwrap(sv)  # (a compiled or DistributedDataParallel-wrapped module: the one inside)
    flip, resume, progress, bf16, keep_best = (
        check_flag(v, n) for v, n in ((flip, "flip"), (resume, "resume"), (progress, "progress"), (bf16, "bf16"), (keep_best, "keep_best"))
    )
    alpha = _check_arguments(
        sv, resume, checkpoint_dir, lr, callback, steps=steps, batch_size=batch_size, val_every=val_every, checkpoint_every=checkpoint_every
    )
    steps, batch_size, val_every, checkpoint_every = int(steps), int(batch_size), int(val_every), int(checkpoint_every)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not -(2**40) < seed < 2**40:  # (the random generators are seeded with seed * 1_000_003 + rank: an int64)
        raise ValueError(f"seed must be an integer between -2**40 and 2**40 (exclusive), got {seed!r}")
    seed = int(seed)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(is_real(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"betas must be two numbers in [0, 1) (Adam's decay rates; default (0.5, 0.999)), got {betas!r}")
    betas = (float(betas[0]), float(betas[1]))
    w = LossWeights.coerce(weights)
    if perceptual is not None and not callable(perceptual):
        raise TypeError(f"perceptual must be a callable f(student_image, teacher_image) -> scalar loss, got {type(perceptual).__name__}")
    if perceptual is None and w.perceptual > 0 and _perceptual_chosen(weights):
        raise ValueError(
            f"weights give the perceptual term {w.perceptual:g}, but no perceptual= loss was passed: pass "
            "perceptual=f(student_image, teacher_image) -> scalar (e.g. an LPIPS network), or leave the term out"
        )
    if w.perceptual > 0 and perceptual is None:
        w = w.without("perceptual")  # (the default weight: the term needs a network the caller brings)
    if not any(getattr(w, name) for name in ("feature", "alignment", "output", "perceptual", "adversarial", "temporal")):
        raise ValueError(
            f"weights: every loss term is 0 ({w}; a perceptual weight counts only with perceptual=...); give at "
            "least one term a positive weight"
        )
    crop_hw = _crop(crop)
    check_data_range(data_range)  # now, not at the first validation
    output = check_selector(output, "distill()")
    if getattr(sv.block, "motion_prior", None) and batch_size < PRIOR_LEFT_OUT_EVERY:
        warnings.warn(
            f"batch_size={batch_size}: a block with the motion prior trains every {PRIOR_LEFT_OUT_EVERY}nd pair of a batch "
            "without it (so that it also learns to align by itself), which needs batches of at least "
            f"{PRIOR_LEFT_OUT_EVERY} pairs; with this batch size every pair keeps the prior. Use batch_size >= "
            f"{PRIOR_LEFT_OUT_EVERY}.",
            stacklevel=2,
        )

    distributed.init_from_env()
    rank, world = distributed.rank_and_world()
    device = distributed.local_device(next(sv.block.parameters()).device)
    if device != next(sv.block.parameters()).device:
        sv.to(device)
    if bf16 and device.type != "cuda":
        raise ValueError("bf16=True needs the module on a CUDA device (bf16 autocast is a GPU option)")

    source = ClipSource(clips, progress=progress and rank == 0, example=sv.example_inputs)
    longest = check_clips(source, crop_hw, sv.example_inputs)
    layout = channels_last_inputs(sv.example_inputs)  # (inputs whose clips are [T, H, W, C]: cropped and flipped so)
    if longest < alpha:
        warnings.warn(
            f"the longest clip has {longest} frames, so training pairs are at most {longest - 1} frames apart, but the "
            f"keyframe policy ({sv.policy!r}) makes shortcut frames up to {alpha - 1} frames from their keyframe; give "
            f"clips of at least {alpha} frames (sv.distilled_interval records {longest})",
            stacklevel=2,
        )
    ckpt_path = None
    if checkpoint_dir is not None:
        ckpt_path = prepare_dir(checkpoint_dir) if rank == 0 else Path(checkpoint_dir) / CHECKPOINT_NAME
        if isinstance(clips, DataLoader) and isinstance(clips.sampler, RandomSampler):
            warnings.warn(
                "clips is a shuffled DataLoader: it is read in another order in each run, so a run resumed from "
                f"{ckpt_path} draws other pairs than the interrupted one would have (not the same result); distill() "
                "draws its pairs at random itself: pass shuffle=False",
                stacklevel=2,
            )
    if val_clips is not None:
        refuse_single_clip(val_clips, "val_clips")
    val_list = list(each_clip(val_clips, sv.example_inputs)) if val_clips is not None else None
    if val_list is not None and not val_list:
        raise ValueError("val_clips is empty: give at least one held-out clip, or None for no validation")
    val_frames = 0
    for i, clip in enumerate(val_list or ()):  # checked now, not at the first validation
        frames = as_clip(clip, i, sv.example_inputs)
        check_inputs(frames, sv.example_inputs, i)
        val_frames = max(val_frames, frames[0].shape[0])
    if val_list is not None and val_frames < 2:
        raise ValueError(
            "val_clips: every clip has one frame, so a validation would run keyframes alone (each clip starts a stream "
            "with one); give held-out clips [T, C, H, W] of at least 2 frames (a shortcut frame needs a keyframe before it)"
        )
    if any(p.dtype == torch.float16 for p in sv.block.parameters() if p.requires_grad):
        raise ValueError(
            "the block's parameters are float16 (sv.half()): Adam cannot train float16 weights (its eps, 1e-8, is 0 in "
            "float16 and squared gradients underflow, so the first steps divide by zero). Distil in float32 and cast "
            "afterwards: sv.float(); distill(sv, ...); sv.half() (on CUDA, bf16=True trains under bfloat16 autocast)"
        )
    if any(p.is_inference() for p in sv.block.parameters()):
        raise ValueError(
            "the block's parameters are inference tensors (the module was built or loaded under "
            "torch.inference_mode()), which autograd cannot train: build it with shortcutify() or load() outside "
            "inference_mode (torch.no_grad() is fine)"
        )
    if not any(p.requires_grad for p in sv.block.parameters()):
        raise ValueError(
            "the block has no trainable parameter (sv.requires_grad_(False) or sv.block.requires_grad_(False) froze it): "
            "call sv.block.requires_grad_(True) before distill()"
        )
    from_data = resolve_data_init(data_init, sv.block)
    resuming = resume and ckpt_path is not None and ckpt_path.exists()
    as_given = None  # the block as the caller gave it, until a first step is applied
    if from_data and not resuming:  # before DistributedDataParallel copies rank 0's block to every process
        as_given = {k: v.detach().clone() for k, v in sv.block.state_dict().items()}
    try:  # (a failure before the first step leaves the block as it was given)
        if as_given is not None:
            with _crop_named(crop_hw):
                start_from_frames(sv, source, alpha - 1, seed=seed, crop=crop_hw, device=device)
        step_fn = distributed.wrap(sv.shortcut_step(), device)
        opt = torch.optim.Adam([p for p in sv.block.parameters() if p.requires_grad], lr=lr, betas=betas)
        run = TrainingState(
            block=sv.block,
            opt=opt,
            sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps)),
            generator=torch.Generator().manual_seed(seed * 1_000_003 + rank),
            adversaries=Adversaries(w, device, lr, betas, seed),
            history=History(),
        )
        if ckpt_path is not None:
            # data_init as given ("auto" resolves against the block in memory, which a resumed run replaces);
            # absent for False, as in the records of 0.13 and earlier, whose runs had no start
            run.record = run_record(sv, world=world, lr=float(lr), betas=tuple(map(float, betas)), batch_size=batch_size,
                                    steps=steps, weights=w, crop=crop_hw, flip=bool(flip), seed=seed, bf16=bool(bf16),
                                    **({} if data_init is False else {"data_init": data_init}),
                                    # (a key or an index; absent for None, as in earlier records; a function is not recorded)
                                    **({"output": output} if isinstance(output, (str, int)) else {}))
        start = 0
        if resuming:
            start = run.restore(ckpt_path, device, rank, world, steps)
        elif resume:
            held = (
                "the block started from the data" if as_given is not None else "the block as built" if sv.block.untrained else
                "the block's current weights kept (it is not untrained, so not started from the data: a run interrupted "
                "before its first checkpoint leaves its steps in them)"
            )
            warnings.warn(f"resume=True but {ckpt_path} does not exist: starting from step 0, {held}", stacklevel=2)
        elif ckpt_path is not None and rank == 0 and ckpt_path.exists():
            warnings.warn(
                f"{ckpt_path} holds the checkpoint of an earlier run; this one (resume=False) starts from step 0 and "
                "replaces it at its first checkpoint. Pass resume=True to continue that run, or another checkpoint_dir "
                "to keep it.",
                stacklevel=2,
            )
        guard = StepGuard(sv.block, lr)
    except BaseException:
        if as_given is not None:
            sv.block.load_state_dict(as_given)
        raise
    trained = start > 0  # the block holds steps taken on gaps up to alpha - 1
    interval_before = sv.distilled_interval

    validated = []  # steps validated in this call (the output range is judged on the first only: its warning comes once)

    def validate(step: int) -> None:
        if val_list is None or rank != 0:
            return
        result = compare_clips(
            sv, val_list, data_range=data_range, max_clips=None, output=output, who="distill(val_clips=)", range_hint=not validated
        )  # restores the training mode
        summary = result.summary()
        validated.append(step)
        best = run.best
        whole = not result.nan_frames and summary["psnr"] == summary["psnr"]  # (a block with NaN frames is never kept)
        if keep_best and whole and (best is None or summary["psnr"] > best["psnr"]):
            run.best = {"step": step, "psnr": float(summary["psnr"]), "block": {k: v.detach().clone() for k, v in sv.block.state_dict().items()}}
        run.history.val.append({"step": float(step), **{k: summary[k] for k in ("psnr", "ssim", "psnr_repeat", "ssim_repeat")}})
        shown["val PSNR"] = f"{summary['psnr']:.2f}"  # (on the progress bar from the next step)

    thawed = [p for p in sv.teacher.parameters() if p.requires_grad]
    if thawed:
        warnings.warn(
            f"{len(thawed)} of the generator's parameters require grad (requires_grad_(True) after shortcutify()): "
            "distill() trains the block alone, so they are frozen for this run (no gradient reaches them) and "
            "given back as they were after it",
            stacklevel=2,
        )
    bar = None
    dtype = next(sv.block.parameters()).dtype  # the inputs' floating dtype (device: above)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    grad_mode = contextlib.ExitStack()  # (a caller's no_grad() or inference_mode() must not reach the steps)
    interrupt = DeferredInterrupt(enabled=world == 1)  # (the processes of a distributed run would have to agree)
    try:
        grad_mode.enter_context(torch.inference_mode(False))
        grad_mode.enter_context(torch.enable_grad())
        grad_mode.enter_context(interrupt)
        for p in thawed:
            p.requires_grad_(False)
        sv.reset()
        sv.train()
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, initial=start, desc="distill", unit="step", dynamic_ncols=True)
        running: dict[str, float] = {}
        shown: dict[str, str] = {}
        unjudged = True  # (whether the loss terms' gradients are still to be checked: _refuse_gradient_free)
        if start == 0:  # (what the steps are judged against: the block as the run starts it)
            validate(0)
        for step in range(start + 1, steps + 1):
            pairs = sample_pairs(source, batch_size, alpha - 1, run.generator, crop=crop_hw, flip=flip, channels_last=layout)
            guard.start(step, pairs)  # each check raises FloatingPointError and leaves the block as it was
            ref_in = to_inputs(pairs.reference, device, dtype, non_blocking=True)
            cur_in = to_inputs(pairs.current, device, dtype, non_blocking=True)
            with autocast:
                with torch.no_grad():
                    with _crop_named(crop_hw):
                        key = sv.run_keyframe(*ref_in)
                        target = sv.run_keyframe(*cur_in)
                guard.teacher(pairs, key, target, compared=lambda out: out if output is None else output_image(out, output))
                student = step_fn(*cur_in, reference=key.taps, return_aligned=w.alignment > 0)
                image, target_image = output_image(student.output, output), output_image(target.output, output)
                previous = output_image(key.output, output)
                terms = student_terms(
                    w, feature=student.feature, aligned=student.aligned, target_feature=target.dec,
                    output=student.output if output is None else image,
                    target_output=target.output if output is None else target_image, image=image, target_image=target_image,
                    perceptual=perceptual,
                )
                terms.update(run.adversaries.student_terms(image, previous))
                _refuse_unreached(terms, image, output)
                if unjudged and world == 1:  # (once a run, at its first step with a loss: a backward per term)
                    with _inplace_named(sv):
                        unjudged = not _refuse_gradient_free(terms, [p for p in sv.block.parameters() if p.requires_grad], sv.config.dec_layer)
                total = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            _backward(total, sv)
            logs, total_value = {k: float(v.detach()) for k, v in terms.items()}, float(total.detach())  # type: ignore[union-attr]
            guard.check(logs, total_value)
            opt.step()
            as_given = None  # a step is applied: from now on a failure keeps the last good step's block
            if not trained:  # (now, so that a block saved from the callback records it too)
                sv.distilled_interval = min(alpha, longest)
            trained = True
            run.sched.step()
            logs.update({k: float(v) for k, v in run.adversaries.update(image, target_image, previous, autocast).items()})
            logs["total"] = total_value
            run.history.record(logs)
            for k, v in logs.items():
                running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
            if bar is not None:
                bar.update(1)
                bar.set_postfix({**{k: f"{v:.4f}" for k, v in running.items() if not k.startswith("D_")}, **shown}, refresh=False)
            if callback is not None and rank == 0:
                callback(step, logs)
            if val_list is not None and (step % val_every == 0 or step == steps):
                validate(step)
            if ckpt_path is not None and (step % checkpoint_every == 0 or step == steps):
                rng = distributed.gather(run.generator.get_state())
                if rank == 0:
                    run.save(ckpt_path, step, rng)
            if interrupt.requested:  # Ctrl-C during this step: it is complete, and so is the checkpoint
                if ckpt_path is not None and not (step % checkpoint_every == 0 or step == steps):
                    run.save(ckpt_path, step, [run.generator.get_state()])
                kept = f"; checkpoint of step {step} in {ckpt_path} (resume=True continues)" if ckpt_path is not None else ""
                raise KeyboardInterrupt(f"distill() interrupted after step {step} of {steps}: the block holds its steps{kept}")
        if interrupt.requested:  # (Ctrl-C before a step ran: a resumed run that was complete)
            raise KeyboardInterrupt("distill() interrupted before its first step")
        _keep_best(sv, run, rank, world, keep_best)  # (every process: rank 0 decides)
        if run.history.kept == 0 and start == 0:  # the block as the run started it: trained for what it was before
            sv.distilled_interval, trained = interval_before, False
    except BaseException:
        if as_given is not None:  # failed before any step was applied: the data-dependent start is undone too
            sv.block.load_state_dict(as_given)
        raise
    finally:
        grad_mode.close()
        for p in thawed:
            p.requires_grad_(True)
        for p in sv.block.parameters():  # (the last step's gradients: nothing reads them after the run)
            p.grad = None
        if bar is not None:
            bar.close()
        sv.eval()
        sv.reset()
        if trained:
            sv.distilled_interval = min(alpha, longest)  # (the gaps the clips held; warned above if fewer)
    if rank != 0:  # (rank 0 validated: its warnings say it once)
        return run.history
    last = run.history.val[-1] if run.history.val else None
    first = run.history.val[0] if run.history.val and run.history.val[0]["step"] == 0 and len(run.history.val) > 1 else None
    if run.history.kept is not None and last is not None:
        last = next(v for v in run.history.val if int(v["step"]) == run.history.kept)  # (what the block returned scored)
        warnings.warn(
            f"distill(): the last validation (step {int(run.history.val[-1]['step'])}: {run.history.val[-1]['psnr']:.2f} dB on "
            f"val_clips) scored below step {run.history.kept}'s ({last['psnr']:.2f} dB), so the block of step "
            f"{run.history.kept} is returned (keep_best=True; keep_best=False returns the last). "
            + (_LITTLE_TO_LEARN if run.history.kept == 0 and last["psnr"] > last["psnr_repeat"] + WORSE_THAN_START_DB else
               "Fewer steps or a lower lr may serve these clips better, as may training clips more like val_clips."),
            RuntimeWarning,
            stacklevel=2,
        )
    elif first is not None and last is not None and last["psnr"] < first["psnr"] - WORSE_THAN_START_DB:
        warnings.warn(
            f"after {steps} steps the shortcut frames on val_clips are {first['psnr'] - last['psnr']:.2f} dB below those of "
            f"the block the run started from ({last['psnr']:.2f} vs {first['psnr']:.2f} dB at step 0; repeating the keyframe: "
            f"{last['psnr_repeat']:.2f} dB): the steps made it worse on these clips. " + _LITTLE_TO_LEARN
            + ("" if keep_best else " keep_best=True returns the best validated block instead."),
            RuntimeWarning,
            stacklevel=2,
        )
    if last is not None and last["psnr"] < last["psnr_repeat"]:  # (NaN: no shortcut frame, warned by the validation)
        warnings.warn(
            f"after {steps} steps the shortcut frames on val_clips are {last['psnr_repeat'] - last['psnr']:.2f} dB below "
            f"repeating the keyframe ({last['psnr']:.2f} vs {last['psnr_repeat']:.2f} dB): the block does not yet beat "
            "showing the keyframe again. Train longer (steps: the learning rate decays over them), try other taps "
            "(suggest_taps(..., frames=a clip)), or check output= for a generator of several images.",
            RuntimeWarning,
            stacklevel=2,
        )
    return run.history
