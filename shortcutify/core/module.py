"""The stateful :class:`ShortcutV2V` module: keyframes run the teacher, other frames the shortcut."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten

from ..errors import ShortcutifyError, TapShapeError
from .blocks import KeyframeTaps, Reference, ShortcutBlock
from .checks import is_count
from .config import ShortcutConfig
from .cost import CostReport, PathCost, count_macs, param_count
from .cut import ALIGNED_INPUT, REFERENCE_INPUT, Cut
from .policy import KeyframePolicy, policy_to_config
from .programs import Programs, build_programs
from .storage import ExampleInput, Manifest, teacher_checksum, write_saved
from .taps import TapInfo

__all__ = ["ShortcutV2V", "KeyframeOutput", "ShortcutOutput", "ShortcutStep"]


def _signature(args: tuple, kwargs: dict) -> tuple:
    leaves = tree_flatten((args, kwargs))[0]
    return tuple((tuple(v.shape), v.dtype, v.device) if isinstance(v, Tensor) else (type(v), v) for v in leaves)


def _program_key(args: tuple) -> tuple:
    """What a shape-specific program holds for: the positional inputs' signature and memory layout."""
    strides = tuple(v.stride() for v in tree_flatten(args)[0] if isinstance(v, Tensor))
    return _signature(args, {}), strides


class KeyframeOutput(NamedTuple):
    """What a keyframe computes: the teacher's ``output`` and the tap values ``enc`` ``[B, Ca, Ha, Wa]``, ``dec`` ``[B, Cf, Hf, Wf]``."""

    output: Any
    enc: Tensor
    dec: Tensor

    @property
    def taps(self) -> KeyframeTaps:
        """The tap values, as a block takes them for a reference."""
        return KeyframeTaps(self.enc, self.dec)


class ShortcutOutput(NamedTuple):
    """What a shortcut frame computes: its ``output``, the predicted decoder-tap ``feature``
    ``[B, Cf, Hf, Wf]``, and ``aligned`` (the prediction from the warped reference alone) when
    asked for, else ``None``."""

    output: Any
    feature: Tensor
    aligned: Tensor | None


def _call_shortcut(program: nn.Module, args: tuple, kwargs: dict, reference: Any, return_aligned: bool) -> ShortcutOutput:
    out, feature, aligned = program(*args, **kwargs, **{REFERENCE_INPUT: reference, ALIGNED_INPUT: return_aligned})
    return ShortcutOutput(out, feature, aligned)


class ShortcutStep(nn.Module):
    """A shortcut frame as a plain module, for training: ``(*inputs, reference, return_aligned=False) -> ShortcutOutput``.

    ``reference`` is a prepared reference or a keyframe's :class:`~shortcutify.core.blocks.KeyframeTaps`
    (the block then prepares it inside this call, so that every block parameter is used in
    one forward, as ``DistributedDataParallel`` wants). Obtained from
    :meth:`ShortcutV2V.shortcut_step`; it shares the module's programs and block.
    """

    def __init__(self, owner: ShortcutV2V) -> None:
        super().__init__()
        # only the block is a submodule: .train(), .parameters() and DistributedDataParallel
        # see the trainable part; the module (which shares the frozen teacher) is not registered
        self.block = owner.block
        self._owner = [owner]

    def forward(self, *args: Any, reference: Any, return_aligned: bool = False, **kwargs: Any) -> ShortcutOutput:
        return self._owner[0].run_shortcut(*args, reference=reference, return_aligned=return_aligned, **kwargs)


@dataclass
class _State:
    reference: Reference
    signature: tuple
    since_keyframe: int


class ShortcutV2V(nn.Module):
    """A generator made cheaper per frame by a learned shortcut (Shortcut-V2V).

    Built by :func:`~shortcutify.shortcutify` (or :func:`~shortcutify.load`). Call it on
    successive frames, exactly as the generator (same positional/keyword arguments, each
    tensor ``[B, ...]`` holding B independent streams); it returns what the generator
    returns (tensor, tuple or dict).

    * On a keyframe (first frame, after :meth:`reset`, when the inputs' shapes, dtypes or
      devices change, and when the policy says so) the full teacher runs; its output is
      the teacher's output and the encoder/decoder tap values become the reference.
    * On other frames the shortcut program runs: the layers before the encoder tap, the
      block, and the layers after the decoder tap (plus whatever the tail needs).

    The teacher is frozen (``requires_grad=False``, eval mode); only :attr:`block` is
    trainable, and only the block is this module's own: ``state_dict()``, ``parameters()`` and
    ``load_state_dict()`` hold the block alone (keys ``block.*``), never the teacher's weights
    (they are your generator's), however many programs share its layers. ``.to()`` moves the
    teacher too. The module cannot be pickled: use :meth:`save` and :func:`~shortcutify.load`. Calls run under ``torch.no_grad()``. Training (see :func:`shortcutify.distill`)
    uses :meth:`run_keyframe` for the teacher's side and :meth:`shortcut_step` for the
    student's; nothing is patched.

    Attributes:
        block: the :class:`~shortcutify.core.blocks.ShortcutBlock`.
        policy: the keyframe policy.
        config: the :class:`~shortcutify.core.config.ShortcutConfig` (taps, block).
        enc, dec: :class:`~shortcutify.core.taps.TapInfo` of the taps (shapes on the example input).
        skipped_nodes: node names of the teacher that shortcut frames do not run.
        graph_signature: the teacher's graph signature with the taps marked.
        keyframe_program, shortcut_program, inference_program: the fx programs (see
            :mod:`shortcutify.core.programs`).
        last_was_keyframe: whether the most recent call ran the full teacher.
    """

    def __init__(
        self,
        teacher: nn.Module,
        cut: Cut,
        block: ShortcutBlock,
        policy: KeyframePolicy,
        example_inputs: tuple[Any, ...],
        recapture: Callable[[tuple[Any, ...]], Cut] | None = None,
    ) -> None:
        super().__init__()
        programs = build_programs(cut, block)
        # the programs share the teacher's modules: held outside the module tree, so that
        # state_dict(), parameters() and load_state_dict() see only what this module owns
        self._main = programs
        self.block = block
        self.policy = policy
        self.enc: TapInfo = cut.enc
        self.dec: TapInfo = cut.dec
        self.skipped_nodes: tuple[str, ...] = cut.skipped
        self.graph_signature: tuple[str, ...] = cut.signature
        self.config = ShortcutConfig(
            enc_layer=cut.enc_layer,
            dec_layer=cut.dec_layer,
            enc_node=cut.enc.name,
            dec_node=cut.dec.name,
            enc_shape=tuple(cut.enc.shape[1:]),
            dec_shape=tuple(cut.dec.shape[1:]),
            width=block.width,
            resolution=block.resolution,
            kernel_size=block.kernel_size,
            capture=cut.captured.method,
        )
        # a graph specialised on the example's shapes (export) is captured again, once, for
        # every other input signature; these programs share the block and are dropped by .to()
        self._recapture = recapture if cut.captured.shape_specific else None
        self._capture_key = _program_key(tuple(example_inputs))
        self._recaptured: dict[tuple, Programs] = {}
        self._teacher = [teacher]  # not a submodule: its weights are already in the programs
        self._example = tuple(x.detach().cpu() if isinstance(x, Tensor) else x for x in example_inputs)
        self._fixed_args: dict[str, Any] = dict(cut.captured.fixed_args)
        self._state: _State | None = None
        self.last_was_keyframe = False
        self.train(False)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ShortcutV2V:
        # .to()/.cuda()/.double() also reach the teacher: the programs share its submodules
        # but hold their own references to tensors the graph reads directly
        self._teacher[0]._apply(fn, *args, **kwargs)
        for program in (self._main.keyframe, self._main.shortcut, self._main.inference):
            program._apply(fn, *args, **kwargs)
        self._recaptured.clear()
        return super()._apply(fn, *args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "a ShortcutV2V cannot be pickled or deep-copied (its programs are fx graphs over your generator's "
            "modules): save the block with sv.save(path) and attach it again with shortcutify.load(generator, path)"
        )

    # ------------------------------------------------------------------ programs
    @property
    def keyframe_program(self) -> fx.GraphModule:
        """``(*inputs) -> (output, enc, dec)``: the teacher with the tap values as extra outputs."""
        return self._main.keyframe

    @property
    def shortcut_program(self) -> fx.GraphModule:
        """``(*inputs, shortcut_reference=, shortcut_return_aligned=) -> (output, f_hat, aligned)``."""
        return self._main.shortcut

    @property
    def inference_program(self) -> fx.GraphModule:
        """``(*inputs, shortcut_reference=) -> output``: what :meth:`forward` runs on shortcut frames."""
        return self._main.inference

    def _programs(self, args: tuple, kwargs: dict) -> Programs:
        """The programs for these inputs: the ones built at construction, or (for a
        shape-specific capture and inputs of another signature) ones captured for them."""
        main = self._main
        if self._recapture is None:
            return main
        key = _program_key(args)  # keyword arguments are fixed ones: the programs check their values
        if key == self._capture_key:
            return main
        if key not in self._recaptured:
            with contextlib.ExitStack() as stack:  # captured as the model is, not as the caller's autocast would run it
                for device_type in {v.device.type for v in tree_flatten(args)[0] if isinstance(v, Tensor)}:
                    stack.enter_context(torch.autocast(device_type, enabled=False))
                cut = self._recapture(args)
            for role, tap in (("enc_layer", cut.enc), ("dec_layer", cut.dec)):
                built = self.enc if role == "enc_layer" else self.dec
                if tap.shape[1] != built.shape[1]:
                    raise TapShapeError(
                        f"for inputs {[tuple(v.shape) for v in args if isinstance(v, Tensor)]} the {role} "
                        f"{getattr(self.config, role)!r} has {tap.shape[1]} channels; the block was built for "
                        f"{built.shape[1]} (inputs {[list(v.shape) for v in self._example if isinstance(v, Tensor)]}). "
                        "Use inputs of the example's layout, or wrap the generator again for these."
                    )
            self._recaptured[key] = build_programs(cut, self.block)
        return self._recaptured[key]

    # ------------------------------------------------------------------ state
    @property
    def teacher(self) -> nn.Module:
        """The generator this module was built from (frozen)."""
        return self._teacher[0]

    @property
    def example_inputs(self) -> tuple[Any, ...]:
        """The example inputs given to :func:`~shortcutify.shortcutify` (tensors on CPU)."""
        return self._example

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
    def run_keyframe(self, *args: Any, **kwargs: Any) -> KeyframeOutput:
        """Run the teacher: its output and the encoder/decoder tap values."""
        out, a, f = self._programs(args, kwargs).keyframe(*args, **kwargs)
        return KeyframeOutput(out, a, f)

    def prepare_reference(self, keyframe: KeyframeOutput) -> Reference:
        """The block's reference state from a keyframe's tap values."""
        return self.block.prepare_reference(keyframe.enc, keyframe.dec)

    def run_shortcut(self, *args: Any, reference: Reference | KeyframeTaps, return_aligned: bool = False, **kwargs: Any) -> ShortcutOutput:
        """Run a shortcut frame against ``reference``, keeping the predicted feature.

        ``reference``: a prepared reference, or a keyframe's raw :class:`KeyframeTaps`.
        ``return_aligned``: also compute the prediction from the warped reference alone.
        See :meth:`predict` for the output alone.
        """
        return _call_shortcut(self._programs(args, kwargs).shortcut, args, kwargs, reference, return_aligned)

    def shortcut_step(self) -> ShortcutStep:
        """:meth:`run_shortcut` as a module (what training wraps in ``DistributedDataParallel``)."""
        return ShortcutStep(self)

    def predict(self, *args: Any, reference: Reference, **kwargs: Any) -> Any:
        """The output of a shortcut frame against ``reference``, as :meth:`forward` computes it.

        Unlike :meth:`run_shortcut` it keeps no intermediate value: the predicted decoder
        feature is freed as soon as the tail has read it (lower peak memory).
        """
        return self._programs(args, kwargs).inference(*args, **kwargs, **{REFERENCE_INPUT: reference})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        sig = _signature(args, kwargs)
        state = self._state
        with torch.no_grad():
            if state is not None and state.signature == sig and not self.policy.is_keyframe(state.since_keyframe + 1):
                out = self.predict(*args, reference=state.reference, **kwargs)
                state.since_keyframe += 1
                self.last_was_keyframe = False
                return out
            key = self.run_keyframe(*args, **kwargs)
            self._state = _State(self.prepare_reference(key), sig, 0)
            self.last_was_keyframe = True
            return key.output

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
        if interval is not None and not is_count(interval):
            raise ValueError(f"interval must be an integer >= 1 (frames from one keyframe to the next), got {interval!r}")
        ex = self._example_on_device() if example_inputs is None else (
            tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        )
        block = self.block
        with torch.no_grad():
            _, a, f = self.run_keyframe(*ex)
            ref = block.prepare_reference(a, f)
        t_macs, t_ops, t_unc = count_macs(self.teacher, *ex, **self._fixed_args)
        k_macs, k_ops, k_unc = count_macs(self.run_keyframe, *ex)
        r_macs, r_ops, r_unc = count_macs(block.prepare_reference, a, f)
        s_macs, s_ops, s_unc = count_macs(self.predict, *ex, reference=ref)
        b_macs, b_ops, b_unc = count_macs(block, a, ref)
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
            interval=self.policy.interval if interval is None else int(interval),
            input_shapes=tuple(tuple(x.shape) for x in ex if isinstance(x, Tensor)),
        )

    # ------------------------------------------------------------------ saving
    def manifest(self) -> Manifest:
        """What :meth:`save` writes beside the block's weights.

        Raises:
            ShortcutifyError: an example input is not a tensor (it could not be stored).
        """
        if not all(isinstance(x, Tensor) for x in self._example):
            raise ShortcutifyError("save() needs example inputs that are all tensors (non-tensor arguments cannot be stored)")
        return Manifest(
            config=self.config,
            interval=self.policy.interval,
            policy=policy_to_config(self.policy),
            example_inputs=tuple(ExampleInput.of(x) for x in self._example),
            teacher=type(self.teacher).__name__,
            teacher_checksum=teacher_checksum(self.teacher),
            graph_signature=self.graph_signature,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the block and its config (not the teacher) to the directory ``path``; see :func:`~shortcutify.load`."""
        return write_saved(path, self.manifest(), self.block.state_dict())

    def __repr__(self) -> str:
        return (
            f"ShortcutV2V(teacher={type(self.teacher).__name__}, enc={self.enc.name!r} {list(self.enc.shape[1:])}, "
            f"dec={self.dec.name!r} {list(self.dec.shape[1:])}, width={self.block.width}, resolution={self.block.resolution!r}, policy={self.policy!r}, "
            f"block_params={param_count(self.block.parameters()):,}, skipped_nodes={len(self.skipped_nodes)})"
        )
