"""``shortcutify()`` and the stateful :class:`ShortcutV2V` module it returns."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from .blocks import RESOLUTIONS, Reference, ShortcutBlock, default_width
from .cost import CostReport, PathCost, count_macs, param_count
from .graph import REFERENCE_INPUT, Programs, TapInfo, annotate, as_tuple, build_programs, trace
from .policy import FixedInterval, KeyframePolicy

__all__ = ["ShortcutV2V", "shortcutify"]


def _signature(args: tuple, kwargs: dict) -> tuple:
    leaves = tree_flatten((args, kwargs))[0]
    return tuple((tuple(v.shape), v.dtype, v.device) if isinstance(v, Tensor) else (type(v), v) for v in leaves)


@dataclass
class _State:
    reference: Reference
    signature: tuple
    since_keyframe: int


class ShortcutV2V(nn.Module):
    """A generator made cheaper per frame by a learned shortcut (Shortcut-V2V).

    Built by :func:`shortcutify`. Call it on successive frames, exactly as the generator
    (same positional/keyword arguments, each tensor ``[B, ...]`` holding B independent
    streams); it returns what the generator returns (tensor, tuple or dict).

    * On a keyframe (first frame, after :meth:`reset`, when the inputs' shapes, dtypes or
      devices change, and when the policy says so) the full teacher runs; its output is
      the teacher's output and the encoder/decoder tap values become the reference.
    * On other frames the shortcut program runs: the layers before the encoder tap, the
      block, and the layers after the decoder tap (plus whatever the tail needs).

    The teacher is frozen (``requires_grad=False``, eval mode); only :attr:`block` is
    trainable. Calls run under ``torch.no_grad()``; training uses :meth:`run_keyframe`
    and :meth:`run_shortcut` (see :func:`shortcutify.distill`).

    Attributes:
        block: the :class:`~shortcutify.blocks.ShortcutBlock`.
        policy: the keyframe policy.
        enc, dec: :class:`~shortcutify.graph.TapInfo` of the taps (shapes on the example input).
        last_was_keyframe: whether the most recent call ran the full teacher.
    """

    def __init__(
        self,
        teacher: nn.Module,
        programs: Programs,
        block: ShortcutBlock,
        policy: KeyframePolicy,
        example_inputs: tuple[Any, ...],
        config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.keyframe_program = programs.keyframe
        self.shortcut_program = programs.shortcut
        self.inference_program = programs.inference
        self.block = block
        self.policy = policy
        self.enc: TapInfo = programs.enc
        self.dec: TapInfo = programs.dec
        self.skipped_nodes: tuple[str, ...] = programs.skipped
        self.graph_signature = programs.signature
        self.config = config
        self._teacher = [teacher]  # not a submodule: its weights are already in the programs
        self._example = tuple(x.detach().cpu() if isinstance(x, Tensor) else x for x in example_inputs)
        self._fixed_args: dict[str, Any] = {}
        self._state: _State | None = None
        self.last_was_keyframe = False
        self.train(False)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ShortcutV2V:
        # .to()/.cuda()/.double() also reach the teacher: the programs share its submodules
        # but hold their own references to tensors the graph reads directly
        self._teacher[0]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ state
    @property
    def teacher(self) -> nn.Module:
        """The generator this module was built from (frozen)."""
        return self._teacher[0]

    def reset(self) -> None:
        """Forget the reference: the next call starts new streams with a keyframe."""
        self._state = None

    @property
    def reference(self) -> Reference | None:
        """The current reference state (``None`` before the first frame or after :meth:`reset`)."""
        return None if self._state is None else self._state.reference

    def train(self, mode: bool = True) -> ShortcutV2V:
        """Only the block changes mode; the teacher stays in eval mode."""
        self.training = mode
        self.block.train(mode)
        return self

    # ---------------------------------------------------------------- running
    def run_keyframe(self, *args: Any, **kwargs: Any) -> tuple[Any, Tensor, Tensor]:
        """Run the teacher: ``(output, a, f)`` with ``a``/``f`` the encoder/decoder tap values."""
        return self.keyframe_program(*args, **kwargs)

    def run_shortcut(self, *args: Any, reference: Reference, **kwargs: Any) -> tuple[Any, Tensor, Tensor | None]:
        """Run a shortcut frame against ``reference``: ``(output, f_hat, aligned)``.

        ``aligned`` (the prediction from the warped reference alone) is ``None`` unless
        ``block.return_aligned`` is set. See :meth:`predict` for the output alone.
        """
        return self.shortcut_program(*args, **kwargs, **{REFERENCE_INPUT: reference})

    def predict(self, *args: Any, reference: Reference, **kwargs: Any) -> Any:
        """The output of a shortcut frame against ``reference``, as :meth:`forward` computes it.

        Unlike :meth:`run_shortcut` it keeps no intermediate value: the predicted decoder
        feature is freed as soon as the tail has read it (lower peak memory).
        """
        return self.inference_program(*args, **kwargs, **{REFERENCE_INPUT: reference})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        sig = _signature(args, kwargs)
        state = self._state
        with torch.no_grad():
            if state is not None and state.signature == sig and not self.policy.is_keyframe(state.since_keyframe + 1):
                out = self.predict(*args, reference=state.reference, **kwargs)
                state.since_keyframe += 1
                self.last_was_keyframe = False
                return out
            out, a, f = self.run_keyframe(*args, **kwargs)
            self._state = _State(self.block.prepare_reference(a, f), sig, 0)
            self.last_was_keyframe = True
            return out

    # ------------------------------------------------------------------ costs
    def _example_on_device(self) -> tuple[Any, ...]:
        p = next(self.block.parameters())
        return tuple(
            x.to(device=p.device, dtype=p.dtype if x.is_floating_point() else x.dtype) if isinstance(x, Tensor) else x
            for x in self._example
        )

    def cost(self, example_inputs: Any = None, interval: int | None = None) -> CostReport:
        """MACs and parameters of teacher, keyframe path, shortcut path, block and floor.

        Args:
            example_inputs: inputs to count on (default: the ones given to :func:`shortcutify`).
            interval: α for the amortised figure (default: the policy's interval).
        """
        ex = self._example_on_device() if example_inputs is None else as_tuple(example_inputs)
        block = self.block
        with torch.no_grad():
            _, a, f = self.run_keyframe(*ex)
            ref = block.prepare_reference(a, f)
        was = block.return_aligned
        block.return_aligned = False
        try:
            t_macs, t_ops, t_unc = count_macs(self.teacher, *ex, **self._fixed_args)
            k_macs, k_ops, k_unc = count_macs(self.run_keyframe, *ex)
            r_macs, r_ops, r_unc = count_macs(block.prepare_reference, a, f)
            s_macs, s_ops, s_unc = count_macs(self.predict, *ex, reference=ref)
            b_macs, b_ops, b_unc = count_macs(block, a, ref)
        finally:
            block.return_aligned = was
        ref_params = param_count(block.reference_parameters())
        t_params = param_count(self.teacher.parameters())
        s_params = param_count(self.inference_program.parameters())
        b_params = param_count(block.parameters())
        return CostReport(
            teacher=PathCost(t_macs, t_params, dict(t_ops), dict(t_unc)),
            keyframe=PathCost(k_macs + r_macs, t_params + ref_params, dict(k_ops + r_ops), dict(k_unc + r_unc)),
            shortcut=PathCost(s_macs, s_params, dict(s_ops), dict(s_unc)),
            block=PathCost(b_macs, b_params, dict(b_ops), dict(b_unc)),
            floor=PathCost(s_macs - b_macs, s_params - b_params, dict(s_ops - b_ops), {}),
            interval=self.policy.interval if interval is None else interval,
            input_shapes=tuple(tuple(x.shape) for x in ex if isinstance(x, Tensor)),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the block and its config (not the teacher) to the directory ``path``; see :func:`shortcutify.load`."""
        from .io import save

        return save(self, path)

    def __repr__(self) -> str:
        return (
            f"ShortcutV2V(teacher={type(self.teacher).__name__}, enc={self.enc.name!r} {list(self.enc.shape[1:])}, "
            f"dec={self.dec.name!r} {list(self.dec.shape[1:])}, width={self.block.width}, resolution={self.block.resolution!r}, policy={self.policy!r}, "
            f"block_params={param_count(self.block.parameters()):,}, skipped_nodes={len(self.skipped_nodes)})"
        )


def shortcutify(
    model: nn.Module,
    enc_layer: str,
    dec_layer: str,
    example_inputs: Tensor | Sequence[Any],
    *,
    interval: int = 3,
    policy: KeyframePolicy | None = None,
    width: int | None = None,
    resolution: str = "half",
    leaf_modules: Sequence[type | str] = (),
    tracer_kwargs: dict[str, Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> ShortcutV2V:
    """Wrap a video-to-video generator into a stateful :class:`ShortcutV2V`.

    Args:
        model: the trained generator (frozen and put in eval mode by this call).
        enc_layer: encoder tap, an fx node name or module qualified name (see :func:`list_taps`).
        dec_layer: decoder tap, downstream of ``enc_layer``.
        example_inputs: one frame ``[B, C, H, W]``, or a tuple of ``forward``'s positional
            arguments; used for shapes, and kept (on CPU) for :meth:`ShortcutV2V.cost`.
        interval: keyframe interval α for the default :class:`FixedInterval` policy.
        policy: a custom keyframe policy (overrides ``interval``).
        width: the block's width ``h`` (default: half the narrower tap's channels).
        resolution: where the block works: ``"half"`` (default) of the decoder tap's
            resolution, several times faster on CPU, or ``"full"``, the paper's layout, more
            accurate (see :class:`~shortcutify.ShortcutBlock`).
        leaf_modules, tracer_kwargs, concrete_args: tracing options, see :func:`shortcutify.graph.trace`.

    Raises:
        UnknownTapError, AmbiguousTapError, TapOrderError, TapShapeError, EmptyCutError,
        UntraceableModelError: with a message that says what to change.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = as_tuple(example_inputs)
    if not any(isinstance(x, Tensor) for x in tree_flatten(list(inputs))[0]):
        raise TypeError("example_inputs must be a tensor [B, C, H, W] or a tuple of forward()'s arguments holding tensors")
    if policy is None:
        policy = FixedInterval(interval)
    elif not isinstance(policy, KeyframePolicy):
        raise TypeError(f"policy must have .interval and .is_keyframe(n), got {type(policy).__name__}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    model.eval()
    model.requires_grad_(False)
    traced = trace(model, leaf_modules=leaf_modules, tracer_kwargs=tracer_kwargs, concrete_args=concrete_args)
    annotate(traced, inputs)
    # validate the taps and measure the cut with a stand-in block, then size the real one
    probe = build_programs(traced, enc_layer, dec_layer, nn.Identity())
    enc_shape, dec_shape, skipped_macs = probe.enc.shape, probe.dec.shape, probe.skipped_macs
    p = next((t for t in model.parameters()), None)
    ref_tensor = p if p is not None else next(x for x in tree_flatten(list(inputs))[0] if isinstance(x, Tensor))
    factory = {"device": ref_tensor.device, "dtype": ref_tensor.dtype if ref_tensor.is_floating_point() else None}
    if width is None:
        width, block_macs = _auto_width(enc_shape, dec_shape, skipped_macs, factory, resolution)
    else:
        block_macs = _block_macs(width, enc_shape, dec_shape, factory, resolution)
    if block_macs >= skipped_macs:
        warnings.warn(
            f"the shortcut block (width {width}) costs {block_macs:,} MACs per frame but the part of the model it "
            f"skips costs only {skipped_macs:,}: shortcut frames will cost more than the teacher. "
            "Choose taps further apart (list_taps() shows the MACs up to each node).",
            stacklevel=2,
        )
    block = ShortcutBlock(enc_shape[1], dec_shape[1], width=width, resolution=resolution).to(**factory)
    programs = build_programs(traced, enc_layer, dec_layer, block)
    config = {
        "enc_layer": enc_layer,
        "dec_layer": dec_layer,
        "enc_node": programs.enc.name,
        "dec_node": programs.dec.name,
        "enc_shape": list(programs.enc.shape[1:]),
        "dec_shape": list(programs.dec.shape[1:]),
        "width": block.width,
        "resolution": block.resolution,
    }
    sv = ShortcutV2V(model, programs, block, policy, inputs, config)
    sv._fixed_args = dict(concrete_args or {})  # the teacher itself needs them (cost())
    return sv


def _block_macs(width: int, enc_shape: tuple, dec_shape: tuple, factory: dict, resolution: str = "half") -> int:
    """fvcore MACs of one block call at the tap shapes (reference preparation excluded)."""
    block = ShortcutBlock(enc_shape[1], dec_shape[1], width=width, resolution=resolution).to(**factory)
    a = torch.zeros(enc_shape, **factory)
    f = torch.zeros(dec_shape, **factory)
    with torch.no_grad():
        ref = block.prepare_reference(a, f)
    return count_macs(block, a, ref)[0]


def _auto_width(enc_shape: tuple, dec_shape: tuple, skipped_macs: int, factory: dict, resolution: str = "half") -> tuple[int, int]:
    """The block width: half the narrower tap (the paper's ratio), shrunk if needed.

    The widest width whose block costs at most half the skipped MACs (so that a
    shortcut frame costs clearly less than the teacher); if none does, the widest whose
    block costs less than the skipped part; else width 1 (and the caller warns).
    """
    hi = default_width(enc_shape[1], dec_shape[1])
    macs = _block_macs(hi, enc_shape, dec_shape, factory, resolution)
    if 2 * macs <= skipped_macs:
        return hi, macs
    for budget in (skipped_macs / 2, skipped_macs - 1):
        lo_w, hi_w, best = 1, hi - 1, None
        while lo_w <= hi_w:  # block MACs grow with the width: binary search
            mid = (lo_w + hi_w) // 2
            m = _block_macs(mid, enc_shape, dec_shape, factory, resolution)
            if m <= budget:
                best, lo_w = (mid, m), mid + 1
            else:
                hi_w = mid - 1
        if best is not None:
            return best
    return 1, _block_macs(1, enc_shape, dec_shape, factory, resolution)
