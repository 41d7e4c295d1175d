"""Building a :class:`~shortcutify.ShortcutV2V`: :func:`shortcutify` from taps, :func:`load` from a saved block.

Both go the same one-way path: capture the generator (:mod:`~shortcutify.core.capture`),
resolve the cut (:mod:`~shortcutify.core.cut`), size and make the block
(:mod:`~shortcutify.core.blocks`), then the module builds its programs.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten, tree_unflatten
from typing_extensions import Unpack

from ..errors import (
    IncompatibleCheckpointError,
    InputMismatchError,
    InputTypeError,
    ShortcutifyError,
    TapOrderError,
    TapShapeError,
    UntraceableModelError,
)
from ..version import __version__
from .blocks import BLOCK_TYPES, make_block, motion_pool_for, motion_prior_name, prior_names
from .blocks.sizing import AUTO, auto_layout, auto_width, block_macs, check_layout_choice
from .caller import warn_caller
from .capture import CaptureKwargs, CaptureOptions, as_tuple, capture, fresh, recapture, refuse_unusable, same_value, unwrap
from .checks import ASPECT_FACTOR, MODED_TYPES, check_tap_rows, frame_aspect, frames_batch, off_frame_aspect, shapes_of, tap_looks_channels_last, weights_dtype
from .cut import Cut, resolve_cut
from .module import ShortcutV2V
from .policy import FixedInterval, KeyframePolicy, as_policy, policy_from_config
from .storage import (
    CONFIG_NAME,
    Manifest,
    decode_leaf_modules,
    graph_fingerprint,
    read_manifest,
    read_weights,
    same_weights_rounded,
    teacher_checksum,
    weights_path,
)
from .suggest import suggest_taps
from .taps import feeds_depth_to_space

__all__ = ["shortcutify", "load", "block_macs"]


def shortcutify(
    model: nn.Module,
    enc_layer: str | None = None,
    dec_layer: str | None = None,
    example_inputs: Tensor | Sequence[Any] | None = None,
    *,
    interval: int = 3,
    policy: KeyframePolicy | None = None,
    width: int | None = None,
    resolution: str = AUTO,
    motion_prior: bool | str | None = False,
    **capture_options: Unpack[CaptureKwargs],
) -> ShortcutV2V:
    """Wrap a video-to-video generator into a stateful :class:`~shortcutify.ShortcutV2V`.

    Args:
        model: the trained generator (frozen and put in eval mode by this call). A generator
            wrapped by ``torch.compile``, ``nn.DataParallel`` or ``DistributedDataParallel`` is
            unwrapped (:func:`~shortcutify.core.capture.unwrap`): the module serves the one
            inside (``sv.teacher``); :meth:`ShortcutV2V.compile` compiles the result.
        enc_layer: encoder tap, an fx node name or module qualified name (see :func:`~shortcutify.list_taps`).
        dec_layer: decoder tap, downstream of ``enc_layer``. Leave both out to use the first
            pair :func:`~shortcutify.suggest_taps` ranks (logged on the ``shortcutify`` logger
            at warning level, and in ``sv.config``; its progress bar shows while a long
            measurement runs).
        example_inputs: one frame ``[B, C, H, W]``, or a tuple of ``forward``'s positional
            arguments; used for shapes, and kept (on CPU) for :meth:`ShortcutV2V.cost`.
        interval: keyframe interval α for the default :class:`~shortcutify.FixedInterval` policy.
        policy: a keyframe policy, e.g. :class:`~shortcutify.AdaptiveKeyframes` (overrides
            ``interval``; see :mod:`shortcutify.core.policy` for writing one).
        width: the block's width ``h`` (default: the layout's automatic width; for ``"half"``
            and ``"full"`` half the narrower tap's channels, shrunk if the block would cost more
            than half of what it skips).
        resolution: the block layout: ``"auto"`` (default) chooses from the taps
            (:func:`~shortcutify.core.blocks.sizing.auto_layout`: the full layout at half the
            half layout's width where that costs about the same MACs, else the half layout;
            ``sv.block.resolution`` and ``sv.config`` say which); ``"half"``, AdaBD at half the
            decoder tap's resolution; ``"full"``, the paper's layout (see
            :mod:`shortcutify.core.blocks`). With ``width`` given, ``"auto"`` still chooses
            the layout at the automatic widths, then builds it at ``width``.
        motion_prior: start the block's flow from a parameter-free correlation of the
            encoder taps (:func:`~shortcutify.ops.correlation_flow`) that the flow head then
            corrects: ``True`` (the ``"local"`` estimator of :data:`~shortcutify.ops.MOTION_PRIORS`)
            or an estimator's name; ``"local-reduced"`` runs ``"local"`` on the block's own
            reduced encoder features instead of the tap (cheaper on wide taps; its input is
            learned, :data:`~shortcutify.core.blocks.REDUCED_PRIORS`). Its coarse grid is pooled as on ``example_inputs``' frame
            (:func:`~shortcutify.core.blocks.motion_pool_for`), on inputs of any size: give a frame
            of the size you will run. Off by default: it makes the untrained block better than
            repeating the keyframe on moving footage, and distillation from it is about as good
            as without it, but it adds time to every shortcut frame (``benchmarks/RESULTS.md``,
            "Motion prior" and "Distillation over many teachers").
        capture_options: ``capture`` (``"auto"``, ``"fx"``, ``"export"``), ``leaf_modules``,
            ``tracer_kwargs``, ``concrete_args``; see
            :class:`~shortcutify.core.capture.CaptureOptions`.

    Raises:
        UnknownTapError, AmbiguousTapError, TapOrderError, TapShapeError, EmptyCutError,
        UntraceableModelError: with a message that says what to change; the generator is left
            as it was (train modes and ``requires_grad``).
        CaptureMismatchError: the captured graph computes something other than the generator on the
            example inputs (the message names the output that differs and the other capture path).
        GeneratorStateError: a TorchScript generator, weights on the meta device or lazy modules
            not yet initialised.
        TypeError: ``model`` is not a module, ``example_inputs`` are missing, ``motion_prior`` is not a bool or a name.
        ValueError: one tap given without the other, an unknown ``resolution`` or ``motion_prior`` name, a bad
            ``width`` or ``interval``, or an empty example batch.
    """
    return _wrap(
        model, enc_layer, dec_layer, example_inputs, interval=interval, policy=policy, width=width, resolution=resolution,
        motion_prior=motion_prior, prior_size=None, **capture_options,
    )


def _wrap(
    model: nn.Module,
    enc_layer: str | None,
    dec_layer: str | None,
    example_inputs: Tensor | Sequence[Any] | None,
    *,
    interval: int,
    policy: KeyframePolicy | None,
    width: int | None,
    resolution: str,
    motion_prior: bool | str | None,
    prior_size: tuple[int, int] | None,
    **capture_options: Unpack[CaptureKwargs],
) -> ShortcutV2V:
    """:func:`shortcutify`; ``prior_size``: the decoder tap's ``(H, W)`` whose pooling the motion prior keeps
    (:func:`load`: the size the block was built for), None: the example's."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(enc_layer, (Tensor, tuple, list)) or isinstance(dec_layer, (Tensor, tuple, list)):
        raise TypeError(
            "shortcutify(model, enc_layer, dec_layer, example_inputs): the taps come second and third (names from "
            f"list_taps()), the frames fourth; got a {type(enc_layer if isinstance(enc_layer, (Tensor, tuple, list)) else dec_layer).__name__} "
            "where a tap name goes. Pass the frames as "
            "example_inputs=frame (without taps, suggest_taps() chooses them)"
        )
    model = unwrap(model)
    refuse_unusable(model)
    if example_inputs is None:
        raise TypeError("shortcutify() needs example_inputs: one frame [B, C, H, W] or a tuple of forward()'s arguments")
    if (enc_layer is None) != (dec_layer is None):
        raise ValueError(
            f"give both taps or neither (then suggest_taps() chooses them): got enc_layer={enc_layer!r}, dec_layer={dec_layer!r}"
        )
    unknown = sorted(set(capture_options) - set(CaptureKwargs.__annotations__))
    if unknown:  # (before any capture or ranking runs)
        ranking = sorted(set(unknown) & {"output", "frames", "top", "progress"})
        raise TypeError(
            f"shortcutify() got unknown keyword argument(s) {unknown}; besides its own it takes the capture options "
            f"{sorted(CaptureKwargs.__annotations__)}"
            + (
                f". {ranking} are suggest_taps()' options: call suggest_taps(model, example_inputs, ...) with them and "
                "pass the enc_layer and dec_layer of the pair it ranks first (shortcutify() without taps ranks with the defaults)"
                if ranking else ""
            )
        )
    if enc_layer is None:
        best = suggest_taps(model, example_inputs, resolution=resolution, top=1, **capture_options)[0]
        enc_layer, dec_layer = best.enc_layer, best.dec_layer
        logging.getLogger("shortcutify").warning(
            "shortcutify(): no taps given; chose enc_layer=%r, dec_layer=%r (saves %.1f%% of the teacher's MACs per shortcut "
            "frame, %.2fx fewer; difficulty %.3f, judged on the example and a copy of it shifted a few pixels; "
            "suggest_taps(..., frames=a clip) ranks the alternatives on real motion)",
            enc_layer, dec_layer, 100 * best.saved_fraction, best.speedup, best.difficulty,
        )
    inputs = as_tuple(example_inputs)
    if not any(isinstance(x, Tensor) for x in tree_flatten(list(inputs))[0]):
        raise TypeError("example_inputs must be a tensor [B, C, H, W] or a tuple of forward()'s arguments holding tensors")
    if policy is None:
        policy = FixedInterval(interval)
    else:
        policy = as_policy(policy)
    check_layout_choice(resolution)
    if not (motion_prior is None or isinstance(motion_prior, (bool, str))):
        raise TypeError(f"motion_prior must be True, False or an estimator's name {prior_names()}, got {motion_prior!r}")
    motion_prior = motion_prior_name(motion_prior)
    options = CaptureOptions.from_kwargs(**capture_options)
    switched_off = _partial_train_modes(model)
    with _frozen_unless_failing(model):  # (a refused generator keeps its train modes and requires_grad)
        captured = capture(model, inputs, options)
        _warn_partial_train_modes(switched_off)  # (captured: the modes stay as set)
        cut = resolve_cut(captured, enc_layer, dec_layer)
        check_tap_rows(cut.enc.shape, cut.dec.shape, inputs, (enc_layer, dec_layer))
        _check_tap_layouts(cut, inputs, (enc_layer, dec_layer))
        _refuse_frame_free_encoder_tap(cut, inputs)
        _warn_if_random_or_coupled(model, inputs, captured.fixed_args)
        factory = _factory(model, inputs)
        _refuse_tap_dtypes(cut, factory["dtype"], (enc_layer, dec_layer))
        resolution, width, macs = _size_block(cut, factory, resolution, width, motion_prior)
        if cut.ignored_inputs:
            warn_caller(
                f"shortcut frames do not read the generator's input(s) {list(cut.ignored_inputs)}: every path from them to "
                f"the output runs between enc_layer {enc_layer!r} and dec_layer {dec_layer!r}, so between keyframes the "
                "output cannot follow them. Choose an encoder tap that depends on them (list_taps() lists the nodes)."
            )
        if cut.shape_kept:
            kept = sum(captured.macs.get(name, 0) for name in cut.shape_kept)
            warn_caller(
                f"shortcut frames still run {list(cut.shape_kept)[:6]} ({kept:,} MACs) between the taps only because a later "
                f"layer reads their shape (h.shape / h.size() under capture={captured.method!r}, which keeps shapes "
                "symbolic); capture='export' fixes shapes and skips them, as does computing that size from an input or "
                "the decoder tap in the generator"
            )
        if feeds_depth_to_space(cut.dec_node, dict(captured.gm.named_modules())):
            user = next(iter(cut.dec_node.users))
            shuffle = str(user.target) if user.op == "call_module" else user.name
            warn_caller(
                f"dec_layer {dec_layer!r} feeds a pixel shuffle (node {shuffle!r}): its channels hold the sub-pixel "
                "phases of a finer map, which the block would warp as separate features at the coarse resolution. "
                f"The shuffle's output holds the same values on the fine grid: dec_layer={shuffle!r} (or the module "
                "around it) is the better tap (suggest_taps() prefers it)."
            )
        side = sum(captured.macs.get(name, 0) for name in cut.side_kept)
        if side > cut.skipped_macs:
            readers = sorted({u.name for name in cut.side_kept for u in _node(captured, name).users if u.name not in cut.side_kept})
            warn_caller(
                f"shortcut frames still run {side:,} MACs of the layers between enc_layer {enc_layer!r} and dec_layer "
                f"{dec_layer!r} ({list(cut.side_kept)[:6]}{' ...' if len(cut.side_kept) > 6 else ''}), more than the "
                f"{cut.skipped_macs:,} the cut skips, because other values read them (nodes {readers[:6]}: side "
                "outputs such as hidden states or attention maps, or a branch around the decoder tap). Return fewer "
                "outputs (output_hidden_states=False, output_attentions=False) or choose a decoder tap after the "
                "branch joins (list_taps())."
            )
        if macs >= cut.skipped_macs:
            warnings.warn(
                f"the shortcut block (width {width}) costs {macs:,} MACs per frame but the part of the model it "
                f"skips costs only {cut.skipped_macs:,}: shortcut frames will cost more than the teacher. "
                "Choose taps further apart (list_taps() shows the MACs up to each node).",
                stacklevel=2,
            )
        pool = motion_pool_for(prior_size or (cut.dec.shape[-2], cut.dec.shape[-1])) if motion_prior else None
        block = make_block(resolution, cut.enc.shape[1], cut.dec.shape[1], width=width, motion_prior=motion_prior, motion_pool=pool).to(**factory)

        def capture_again(args: tuple[Any, ...], any_batch: bool) -> Cut:
            return resolve_cut(recapture(captured, model, args, options, any_batch=any_batch), enc_layer, dec_layer)

        return ShortcutV2V(model, cut, block, policy, inputs, recapture=capture_again)


def _node(captured: Any, name: str) -> Any:
    """The node ``name`` of the captured graph."""
    return next(n for n in captured.gm.graph.nodes if n.name == name)


#: relative change (largest absolute difference over the largest output magnitude) of one frame's output, batched
#: with another frame against alone (or under another random seed), above which the generator is said to couple its
#: batch entries (or to sample at random); float noise between batch sizes stays orders of magnitude below
COUPLING_TOLERANCE = 1e-3


def _largest_change(first: list[Tensor], second: list[Tensor]) -> tuple[float, float] | None:
    """``(largest absolute difference, largest magnitude)`` of two runs' floating outputs where the difference
    passes :data:`COUPLING_TOLERANCE` of the magnitude; ``None`` where they agree (or differ in shape)."""
    for a, b in zip(first, second):
        if a.shape != b.shape or not a.numel():
            continue
        scale, change = float(a.abs().max()), float((a - b).abs().max())
        if scale > 0 and change > COUPLING_TOLERANCE * scale:
            return change, scale
    return None


def _warn_if_random_or_coupled(model: nn.Module, inputs: tuple[Any, ...], fixed: dict[str, Any]) -> None:
    """Warn when the generator's output for one frame is not a function of that frame: it samples at random
    (``torch.randn`` in ``forward``: keyframes cannot equal a later call, and training targets are random), or
    it depends on the other frames of its batch (batch statistics, a BatchNorm without running statistics:
    per-stream keyframes cannot keep such streams apart).

    Three more runs of the generator: the frames' first entry alone under two random seeds, and batched with a
    second (the example's own, or the first shifted) under the first seed. A generator that fails on these is
    left to the calls that need it.
    """
    batch = frames_batch(shapes_of(inputs))
    if batch == 0:
        return
    leaves, spec = tree_flatten(list(inputs))

    def rows(take: Any) -> tuple[Any, ...]:
        return tuple(tree_unflatten([take(v) if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == batch else v for v in leaves], spec))

    alone = rows(lambda v: v[:1])
    together = rows(lambda v: v[:2]) if batch >= 2 else rows(lambda v: torch.cat([v, v.roll(1, -1) if v.is_floating_point() else v]))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    outs = []
    try:
        for args, seed in ((alone, 0), (together, 0), (alone, 1)):
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed)
                outs.append([v for v in tree_flatten(model(*fresh(args), **fixed))[0] if isinstance(v, Tensor) and v.is_floating_point()])
    except Exception:  # noqa: BLE001 (a generator that cannot run these is not judged here)
        return
    drawn = _largest_change(outs[0], outs[2])
    if drawn is not None:
        change, scale = drawn
        warn_caller(
            f"the generator's output changes by {change:.3g} (of {scale:.3g}) between two runs on the same inputs: it "
            "samples at random in forward() (torch.randn for a noise input left out, dropout called with "
            "training=True, ...), so keyframes differ from a later call of the generator, distill() trains the block "
            "towards random targets and evaluate() compares against them. Give the noise as an input (per frame; a fixed "
            "one held by a wrapper module as a buffer), or draw it from a torch.Generator seeded anew on each call inside "
            "a module kept whole (capture='fx', leaf_modules=[TheModule], outside the taps)."
        )
        return
    fits = [(a, b[:1]) for a, b in zip(outs[0], outs[1]) if a.dim() and b.dim() and a.shape[1:] == b.shape[1:] and (a.shape[0], b.shape[0]) == (1, 2)]
    coupled = _largest_change([a for a, _ in fits], [b for _, b in fits])
    if coupled is not None:
        warn_caller(
            f"the generator's output for a frame changes by {coupled[0]:.3g} (of {coupled[1]:.3g}) when another frame is "
            "batched with it: it couples its batch entries (batch statistics such as x - x.mean(0), a BatchNorm "
            "without running statistics), so per-stream keyframes cannot keep streams apart (a stream's outputs depend "
            "on the others in the teacher already). Run streams in separate calls, or keyframe them together."
        )


class _Reached(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__("the tap is reached")
        self.value = value


def _tap_value(cut: Cut, inputs: tuple[Any, ...]) -> Tensor:
    """The encoder tap's value on ``inputs`` (the captured graph run up to it, under one random seed)."""
    tap = cut.enc_node

    class _UpToTap(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            if n is tap:
                raise _Reached(value)
            return value

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(0)
        try:
            _UpToTap(cut.captured.gm).run(*fresh(inputs))
        except _Reached as reached:
            return reached.value
    raise AssertionError("the graph returned before the encoder tap")  # (a tap is a node of the graph it runs)


def _refuse_frame_free_encoder_tap(cut: Cut, inputs: tuple[Any, ...]) -> None:
    """Refuse an encoder tap whose value does not change when every input does: a shortcut frame's block, which
    sees the current frame only through it, would repeat one output (a recurrent generator's zero initial state,
    ``x.new_zeros(...)``, reads the frame's shape only).

    One more run of the layers up to the tap, on the frames with seeded noise added (at their spread). Judged only
    where every tensor input is frames (floating, 4-D or 5-D): labels, indices, timesteps or vectors are not
    moved (noise could push an index out of its range), so a tap could depend on them alone.
    """
    leaves, spec = tree_flatten(list(inputs))
    tensors = [v for v in leaves if isinstance(v, Tensor)]
    if not tensors or not all(v.is_floating_point() and v.dim() in (4, 5) for v in tensors):
        return
    noise = torch.Generator().manual_seed(0)

    def moved(v: Any) -> Any:
        if not isinstance(v, Tensor) or v.numel() == 0:
            return v
        spread = float(v.float().std()) if v.numel() > 1 else 0.0
        step = torch.randn(v.shape, generator=noise).to(v.device, v.dtype)
        return v + step * (spread if spread > 0 and math.isfinite(spread) else 1.0)

    try:
        before = _tap_value(cut, inputs)
        after = _tap_value(cut, tuple(tree_unflatten([moved(v) for v in leaves], spec)))
    except Exception:  # noqa: BLE001 (a generator that cannot run the moved inputs is not judged here)
        return
    if isinstance(before, Tensor) and isinstance(after, Tensor) and torch.equal(before, after):
        raise TapOrderError(
            f"enc_layer {cut.enc_layer!r} does not depend on the frames: its value stays the same when every input "
            "changes (a constant, a learned start, a zero initial state made with x.new_zeros(...), which reads only "
            "the frame's shape), so the block, which sees a shortcut frame only through that tap, would repeat one "
            "output. Choose an encoder tap computed from the input frames (list_taps() lists the nodes)."
        )


def _check_tap_layouts(cut: Cut, inputs: tuple[Any, ...], taps: tuple[str, str]) -> None:
    """Refuse a tap that looks channels-last ``[B, H, W, C]`` (a LayerNorm between permutes, as in ConvNeXt):
    the block would take its rows for channels and fail on frames of another height. Warn of a tap whose aspect is
    far from the frame's (:func:`~shortcutify.core.checks.off_frame_aspect`): no feature map of the frame."""
    aspect = frame_aspect(shapes_of(inputs))
    for name, tap in zip(taps, (cut.enc, cut.dec)):
        if tap_looks_channels_last(tuple(tap.shape), aspect):
            raise TapShapeError(
                f"the tap {name!r} has shape {tuple(tap.shape)}, which looks channels-last [B, H, W, C] (its dimensions 1 "
                "and 2 have the frame's aspect, 2 and 3 do not): the block would take its rows for channels. Tap the "
                "layer before the permute to channels-last, or after the one back (suggest_taps() lists feature maps "
                "[B, C, H, W] only)."
            )
        if off_frame_aspect(tuple(tap.shape), aspect):
            warn_caller(
                f"the tap {name!r} has shape {tuple(tap.shape)}: its height / width ({tap.shape[2] / tap.shape[3]:.3g}) is "
                f"more than {ASPECT_FACTOR:g} times off the frames' ({aspect:.3g}), so it does not look like a feature map "
                "[B, C, H, W] of the frame (an attention matrix [B, heads, C, tokens], or tokens reshaped), which the block "
                "would warp and blend as an image. Tap feature maps of the frame (suggest_taps() lists them)."
            )


def _partial_train_modes(model: nn.Module) -> list[str]:
    """The modules of a generator in eval mode that are in training mode and whose output depends on it (a dropout
    kept on for test-time noise); none for a generator in training mode as a whole (a forgotten ``.eval()``, which
    README covers)."""
    if model.training:
        return []
    return [name for name, m in model.named_modules() if name and m.training and isinstance(m, MODED_TYPES)]


def _warn_partial_train_modes(on: list[str]) -> None:
    """Say that the modules ``on`` (:func:`_partial_train_modes`) were put in eval mode: the module runs the generator
    frozen, in eval mode."""
    if on:
        warn_caller(
            f"the generator is in eval mode but modules inside it are in training mode: {on[:5]}"
            + (f" and {len(on) - 5} more" if len(on) > 5 else "")
            + " (a dropout kept on for test-time noise, a norm using batch statistics?). shortcutify() runs the "
            "generator frozen, in eval mode, and has put them in eval mode: keyframes and the distillation's targets "
            "are the generator's eval-mode outputs (no dropout, running statistics)"
        )


@contextlib.contextmanager
def _frozen_unless_failing(model: nn.Module) -> Iterator[None]:
    """The generator in eval mode without gradients (the teacher); as it was again if wrapping it fails."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield
    except BaseException:
        for m, mode in modes:
            m.training = mode
        for p, grad in grads:
            p.requires_grad_(grad)
        raise


def _refuse_tap_dtypes(cut: Cut, dtype: torch.dtype | None, taps: tuple[str, str]) -> None:
    """Refuse taps computed in another floating dtype than the block's (the generator's weights'): a submodule
    kept in float64, features cast to bfloat16 inside ``forward``."""
    if dtype is None:
        return
    for role, name, node in (("enc_layer", taps[0], cut.enc_node), ("dec_layer", taps[1], cut.dec_node)):
        seen = node.meta["tensor_meta"][1]
        if seen != dtype:
            raise TapShapeError(
                f"{role} {name!r} is a {str(seen).replace('torch.', '')} value, but the block computes in "
                f"{str(dtype).replace('torch.', '')} (the generator's weights' dtype, in which its inputs are given): "
                "the generator computes this part in another precision (a submodule kept in another dtype, or a cast "
                "inside forward). Pick taps where it computes in its weights' dtype (list_taps() lists the nodes)."
            )


def _factory(model: nn.Module, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """Device and floating dtype for the block: the model's parameters', else the inputs'."""
    p = next((t for t in model.parameters()), None)
    if p is not None:
        return {"device": p.device, "dtype": weights_dtype(model)}
    ref = next(x for x in tree_flatten(list(inputs))[0] if isinstance(x, Tensor))
    return {"device": ref.device, "dtype": ref.dtype if ref.is_floating_point() else None}


def _size_block(cut: Cut, factory: dict[str, Any], resolution: str, width: int | None, motion_prior: str | None) -> tuple[str, int, int]:
    """The block's layout, width and MACs for ``cut``: ``resolution`` (``"auto"``: the layout from the taps,
    :func:`~shortcutify.core.blocks.sizing.auto_layout`) at ``width`` (``None``: the layout's automatic width,
    :func:`~shortcutify.core.blocks.sizing.auto_width`)."""

    @functools.lru_cache(maxsize=None)
    def macs(layout: str, w: int) -> int:
        return block_macs(layout, w, cut.enc.shape, cut.dec.shape, factory, motion_prior=motion_prior)

    if resolution == AUTO:
        resolution, auto, auto_macs = auto_layout(cut.enc.shape, cut.dec.shape, cut.skipped_macs, macs)
        if width is None:
            return resolution, auto, auto_macs
    elif width is None:
        auto, auto_macs = auto_width(cut.enc.shape, cut.dec.shape, cut.skipped_macs, functools.partial(macs, resolution))
        return resolution, auto, auto_macs
    return resolution, width, block_macs(resolution, width, cut.enc.shape, cut.dec.shape, factory, motion_prior=motion_prior)


def load(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    policy: KeyframePolicy | None = None,
    map_location: str | torch.device | None = None,
    **capture_options: Unpack[CaptureKwargs],
) -> ShortcutV2V:
    """Re-attach a saved shortcut block to ``model`` (the user's own generator).

    Args:
        model: a generator with the same graph as the one the block was trained on (wrappers
            unwrapped as by :func:`~shortcutify.shortcutify`).
        path: the directory written by :meth:`ShortcutV2V.save`.
        example_inputs: inputs for tracing (default: zeros of the saved example shapes,
            on the model's device).
        policy: keyframe policy (default: the saved one).
        map_location: where to read the weights to (a device; default: the model's device). The
            block is built on the model's device whatever this is, and the weights are copied
            into it: move the module with ``sv.to(...)``.
        capture_options: ``capture`` (default: the path that saved the block), ``tracer_kwargs`` as
            given to :func:`~shortcutify.shortcutify` originally; ``leaf_modules`` default to the saved
            ones (names, and classes found among the model's modules by module and qualified name);
            ``concrete_args`` default to the saved ones (a value that JSON cannot hold, such as a
            tensor, is not saved: then pass them; others than the saved ones warn).

    Raises:
        TypeError: ``model`` is not a module or ``path`` not a path (``load(model, path)``: the model first).
        FileNotFoundError: ``path`` holds no saved block (or a ``distill`` checkpoint: the message says how to
            save its block).
        IncompatibleCheckpointError: the generator does not match (the message says what
            differs), or a saved file is damaged or malformed (the message names it).
        UntraceableModelError, CaptureMismatchError: the generator cannot be captured (as from
            :func:`~shortcutify.shortcutify`).
        TypeError, ValueError: ``map_location`` is not a device, or one that cannot hold the weights (``"meta"``,
            CUDA where it is not available).
    """
    if not isinstance(model, nn.Module) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"load(model, path) takes the generator (an nn.Module) first and the saved block's directory second, got "
            f"{type(model).__name__} and {type(path).__name__}"
        )
    model = unwrap(model)
    manifest = read_manifest(path)
    cfg = manifest.config
    cfg_file = os.path.join(path, CONFIG_NAME)
    if manifest.library_version != __version__:
        warnings.warn(f"block saved by shortcutify {manifest.library_version}, loading with {__version__}", stacklevel=2)
    if policy is None:
        policy = _saved_policy(manifest, cfg_file)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    defaulted = example_inputs is None
    if example_inputs is None:  # on the model's device, floating ones in its dtype (a block saved in float32 loads onto .double())
        example_inputs = tuple(e.zeros(device) for e in manifest.example_inputs)
        if p is not None and p.is_floating_point():
            example_inputs = tuple(x.to(p.dtype) if x.is_floating_point() else x for x in example_inputs)
    if cfg.resolution not in BLOCK_TYPES:  # (a str: from_dict checked it)
        raise IncompatibleCheckpointError(
            f"the block's layout {cfg.resolution!r} in {cfg_file} is unknown here (known: {tuple(BLOCK_TYPES)}); a layout "
            "from a newer version needs that version, one registered at run time must be registered in "
            "shortcutify.core.blocks.BLOCK_TYPES before load"
        )
    if cfg.kernel_size != 3:
        raise IncompatibleCheckpointError(
            f"the block in {cfg_file} has a {cfg.kernel_size}x{cfg.kernel_size} AdaBD kernel; this version builds 3x3 blocks only"
        )
    # read (and check) the weights before the capture, so that a damaged file is reported at once
    if map_location is not None:
        try:
            where = torch.device(map_location)
        except (TypeError, RuntimeError, ValueError) as exc:
            raise TypeError(f"map_location must be a device (a str or torch.device) or None, got {map_location!r}") from exc
        if where.type == "meta" or (where.type == "cuda" and not torch.cuda.is_available()):
            raise ValueError(
                f"map_location={map_location!r} cannot hold the weights here ({'meta tensors hold no values' if where.type == 'meta' else 'CUDA is not available'}); "
                "leave it out: the block is built on the model's device"
            )
    state = read_weights(path, map_location=map_location or device, manifest=manifest)
    capture_options.setdefault("capture", cfg.capture)  # type: ignore[typeddict-item]  # by the path that saved it
    _fixed_arguments(manifest, capture_options, cfg_file)
    _leaf_modules(manifest, capture_options, model, cfg_file)
    try:
        sv = _wrap(
            model, cfg.enc_layer, cfg.dec_layer, example_inputs, interval=3, policy=policy, width=cfg.width, resolution=cfg.resolution,
            motion_prior=cfg.motion_prior, prior_size=(cfg.dec_shape[-2], cfg.dec_shape[-1]), **capture_options,
        )
    except (IncompatibleCheckpointError, UntraceableModelError):
        raise
    except (InputMismatchError, InputTypeError) as exc:
        if not defaulted:
            raise
        shapes = [list(e.shape) for e in manifest.example_inputs]
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise IncompatibleCheckpointError(
            f"the block in {path} was saved for a {manifest.teacher} taking {len(shapes)} input(s) of shapes {shapes}; "
            f"this {type(model).__name__} cannot run them ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}). "
            "Load it onto the generator it was trained for (or, for one of the same graph taking other inputs, pass "
            "example_inputs=)."
        ) from exc
    except ShortcutifyError as exc:
        raise IncompatibleCheckpointError(
            f"the saved block's taps ({cfg.enc_layer!r} -> {cfg.dec_layer!r}) do not fit this "
            f"{type(model).__name__}: {str(exc).rstrip('.')}. (If shortcutify() was given leaf_modules, tracer_kwargs or "
            "concrete_args that could not be saved, pass the same to load().)"
        ) from exc

    problems = []
    if sv.config.capture != cfg.capture:  # (only when load() was given another path: by default it takes the saved one)
        problems.append(
            f"capture path: the block was made on the graph capture={cfg.capture!r} gave, this load() captured with "
            f"{sv.config.capture!r}, and the two paths make different graphs; leave capture out of load() to use the saved path"
        )
    for role, saved, here in (("enc", cfg.enc_shape, sv.config.enc_shape), ("dec", cfg.dec_shape, sv.config.dec_shape)):
        if saved[:1] != here[:1]:
            problems.append(f"{role} tap channels: saved {saved[0]}, this generator {here[0]}")
    if graph_fingerprint(sv.graph_signature) != manifest.graph_fingerprint:
        diff = list(difflib.unified_diff(manifest.graph_signature, sv.graph_signature, "saved teacher", "this generator", n=0, lineterm=""))
        shown = [line for line in diff if not line.startswith("@@")][:12]
        problems.append("graph differs:\n    " + "\n    ".join(shown) + ("\n    ..." if len(diff) > len(shown) + 2 else ""))
    if problems:
        raise IncompatibleCheckpointError(
            f"the block in {path} was trained for a different generator ({manifest.teacher}):\n  - " + "\n  - ".join(problems)
        )
    try:
        sv.block.load_state_dict(state)
    except RuntimeError as exc:
        raise IncompatibleCheckpointError(
            f"the saved weights in {weights_path(path, manifest)} do not fit the block {cfg_file} describes: {exc}. "
            "Save the block again with sv.save(path)."
        ) from exc
    sv.distilled_interval = manifest.distilled_interval
    sv.policy = policy  # (set again now that the distilled interval is known: warns if it allows longer gaps)
    if teacher_checksum(model) != manifest.teacher_checksum and same_weights_rounded(model, manifest.teacher_checksums) is None:
        warnings.warn(
            "the generator's weights differ from those the block was distilled from (same graph, other weights): "
            "shortcut frames may be poor until you distill again",
            stacklevel=2,
        )
    return sv


def _fixed_arguments(manifest: Manifest, capture_options: dict[str, Any], cfg_file: str) -> None:
    """Give ``load``'s capture the ``concrete_args`` the block was made with, unless the caller gave some.

    Raises:
        IncompatibleCheckpointError: the block was made with fixed arguments whose values the
            config could not store, and the caller gave none.
    """
    given = capture_options.get("concrete_args")
    if given is None:
        if manifest.unsaved_args:
            raise IncompatibleCheckpointError(
                f"the block was made with concrete_args fixing {list(manifest.unsaved_args)} to values that {cfg_file} "
                f"cannot hold (it stores None, numbers, strings, dtypes, lists, tuples and dicts): pass the same "
                "concrete_args={...} to load()"
            )
        if manifest.fixed_args:
            capture_options["concrete_args"] = dict(manifest.fixed_args)
        return
    if not isinstance(given, dict):
        return  # (CaptureOptions refuses it, naming the type)
    differ = sorted(
        name for name in set(manifest.fixed_args) | set(given)
        if name not in manifest.unsaved_args
        and (name not in given or name not in manifest.fixed_args or not same_value(given[name], manifest.fixed_args[name]))
    )
    if differ:
        warn_caller(
            f"load() was given concrete_args {given!r}, but the block was distilled with {dict(manifest.fixed_args)!r} "
            f"(from {cfg_file}); the arguments {differ} differ, so shortcut frames may be poor. Leave concrete_args out "
            "to use the saved ones."
        )


def _leaf_modules(manifest: Manifest, capture_options: dict[str, Any], model: nn.Module, cfg_file: str) -> None:
    """Give ``load``'s capture the ``leaf_modules`` the block was made with, unless the caller gave some; a saved
    class that no module of ``model`` has is left out, with a warning (the capture then says what it cannot trace)."""
    if "leaf_modules" in capture_options or not manifest.leaf_modules:
        return
    leaves, missing = decode_leaf_modules(manifest.leaf_modules, model)
    if missing:
        warn_caller(
            f"the block was made with leaf_modules holding the classes {list(missing)} (from {cfg_file}), but no module of "
            f"this {type(model).__name__} is of them: they are left out; pass leaf_modules=[...] to load() if the "
            "classes were renamed or moved"
        )
    if leaves:
        capture_options["leaf_modules"] = leaves


def _saved_policy(manifest: Manifest, cfg_file: str) -> KeyframePolicy:
    """The keyframe policy the config describes (a policy of the user's own: ``FixedInterval`` of its saved
    interval, with a warning).

    Raises:
        IncompatibleCheckpointError: its description is malformed.
    """
    try:
        policy = policy_from_config(manifest.policy)
    except (KeyError, TypeError, ValueError) as exc:
        raise IncompatibleCheckpointError(
            f"the keyframe policy in {cfg_file} is malformed ({type(exc).__name__}: {exc}): {manifest.policy!r}; "
            "fix it (e.g. {\"type\": \"FixedInterval\", \"n\": 3}), pass policy=... to load(), or save the block again with sv.save(path)"
        ) from exc
    if policy is None:  # (a policy of the user's own: its description is kept, its class is not known here)
        warnings.warn(
            f"the block was saved with a {manifest.policy.get('type')!r} keyframe policy ({manifest.policy!r}), which "
            f"load() cannot rebuild (only the built-in policies are known to it): running FixedInterval("
            f"{manifest.interval}), the saved interval. Pass policy=... to load() to run your policy.",
            stacklevel=3,
        )
        return FixedInterval(manifest.interval)
    return policy
