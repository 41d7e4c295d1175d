"""The stateful :class:`ShortcutV2V` module: keyframes run the teacher, other frames the shortcut."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import operator
import os
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten

from ..errors import (
    AmbiguousTapError,
    ConcurrentCallError,
    EmptyCutError,
    FixedArgumentError,
    GeneratorStateError,
    InputMismatchError,
    InputTypeError,
    NonFiniteKeyframeWarning,
    PlacementError,
    PolicyError,
    ShortcutifyError,
    TapOrderError,
    TapShapeError,
    UnknownTapError,
    UntraceableModelError,
)
from .blocks import KeyframeTaps, Reference, ShortcutBlock
from .caller import warn_caller
from .capture import BatchGuard, eager_failure, same_value
from .checks import MODED_TYPES, SCALING_HINT, check_flag, check_like_example, check_tap_rows, frames_batch, is_count, is_interval, refuse_untensored, shapes_of
from .config import ShortcutConfig
from .cost import CostReport, PathCost, count_macs, param_count
from .cut import ALIGNED_INPUT, REFERENCE_INPUT, Cut
from .policy import FrameSignal, KeyframePolicy, as_policy, change_since_keyframe, policy_to_config, tap_l1
from .programs import Programs, build_programs
from .runner import CompileOptions, Runner
from .storage import ExampleInput, Manifest, encode_fixed_args, encode_leaf_modules, teacher_checksums, write_saved
from .streams import batched_leaves, check_streams, merge_streams, per_stream, scatter_streams, streams_of, take_streams
from .taps import TapInfo

__all__ = ["ShortcutV2V", "KeyframeOutput", "ShortcutOutput", "ShortcutStep"]


def _signature(args: tuple, kwargs: dict) -> tuple:
    if not kwargs and all(type(v) is Tensor for v in args):  # (the usual call, frames alone: the same tuple, sooner)
        return tuple((tuple(int(n) for n in v.shape), v.dtype, v.device) for v in args)
    leaves = tree_flatten((args, kwargs))[0]
    # (sizes as ints: under fvcore's jit trace, as in cost(), they are tensors)
    return tuple((tuple(int(n) for n in v.shape), v.dtype, v.device) if isinstance(v, Tensor) else (type(v), v) for v in leaves)


def _layout(v: Tensor, start: int = 0) -> tuple[int, ...]:
    """``v``'s strides from dimension ``start`` on, the batch dimension's as 0 when it holds one entry: no
    element is reached through it, so a frame viewed out of a video (``video[:1, t]``) shares a fresh frame's
    layout. (Other dimensions of size 1 keep theirs: ops choose their output's memory format from them.)"""
    strides = tuple(int(n) for n in v.stride()[start:])
    return (0, *strides[1:]) if start == 0 and v.dim() > 0 and v.shape[0] == 1 else strides


#: failures that running the generator again cannot explain (it would fail the same way, or worse)
_PASSING: tuple[type[BaseException], ...] = (
    ShortcutifyError, MemoryError, getattr(torch, "OutOfMemoryError", MemoryError), *((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()),
)


def _program_key(args: tuple) -> tuple:
    """What a shape-specific program holds for: the positional inputs' signature and memory layout."""
    strides = tuple(_layout(v) for v in tree_flatten(args)[0] if isinstance(v, Tensor))
    return _signature(args, {}), strides


def _frame_key(args: tuple, kwargs: dict) -> tuple:
    """The inputs' shapes without their first (batch) dimension, positional then by keyword: what sets the taps' sizes."""
    shapes = lambda values: tuple(tuple(v.shape[1:]) for v in tree_flatten(values)[0] if isinstance(v, Tensor))  # noqa: E731
    return shapes(args), tuple((k, shapes(kwargs[k])) for k in sorted(kwargs))


def _batch_and_layout(args: tuple) -> tuple[int, tuple] | None:
    """The positional inputs' common batch size and their key without it (what a program
    captured with a symbolic batch size holds for, besides its guard); ``None`` when the
    inputs are not all tensors with one common batch size."""
    if not args or not all(isinstance(v, Tensor) and v.dim() >= 1 for v in args):
        return None
    sizes = {int(v.shape[0]) for v in args}
    if len(sizes) != 1:
        return None
    rest = tuple((tuple(int(n) for n in v.shape[1:]), _layout(v, 1), v.dtype, v.device) for v in args)
    return sizes.pop(), rest


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


def _check_reference(reference: Any, taps: bool = True) -> None:
    """Refuse what cannot be a shortcut frame's reference: ``None``, a whole :class:`KeyframeOutput`, anything that
    is not a reference (a named tuple of tensors); ``taps``: a keyframe's taps are taken too (:meth:`run_shortcut`)."""
    fix = "give the reference of a keyframe, sv.prepare_reference(sv.run_keyframe(*inputs))" + (
        ", or the keyframe's taps, sv.run_keyframe(*inputs).taps" if taps else "")
    if reference is None:
        raise TypeError(f"reference is None: {fix}")
    if isinstance(reference, KeyframeOutput):
        raise TypeError(f"reference is a KeyframeOutput (what run_keyframe returns, output and taps): {fix}")
    if not (isinstance(reference, tuple) and hasattr(reference, "_fields") and all(isinstance(v, Tensor) for v in reference)):
        raise TypeError(f"reference must be a keyframe's reference (a named tuple of tensors), got {type(reference).__name__}: {fix}")


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
    """What the module keeps between calls, per stream (batch entry) where it says ``[B]``."""

    reference: Reference
    signature: tuple
    since_keyframe: Tensor  # [B] int64 (CPU): frames since each stream's keyframe
    stale: Tensor  # [B] bool (CPU): streams reset since, keyframed on the next call
    # for policies that use the change (else None):
    previous: Tensor | None  # [B, Ca, Ha, Wa]: the last frame's encoder tap
    travelled: Tensor | None  # [B] float32 (CPU): the tap's L1 steps summed since the keyframe
    keyframe_norm: Tensor | None  # [B] float32 (CPU): the keyframe taps' L1 norms
    # keyframes whose taps are not yet checked for non-finite values: (stream indices [K] (CPU),
    # [K] bool on the taps' device); read on the next call, so that a keyframe does not wait for the device
    unchecked: list[tuple[Tensor, Tensor]]
    # the generator folds each stream's frames into the batch of its taps (a video U-Net's [B·D, C, H, W]):
    # previous, travelled and keyframe_norm are then per tap row, and the streams take keyframes together
    folded: bool = False
    batched_outputs: tuple[bool, ...] | None = None  # per output leaf of the last whole batch: batched by stream


def _sums(x: Tensor) -> Tensor:
    """``[B]``: the sum of each stream's values ``x[b]``, accumulated in at least float32."""
    return x.flatten(1).sum(1, dtype=torch.promote_types(x.dtype, torch.float32))


def _not_finite(key: KeyframeOutput) -> Tensor:
    """``[B]`` bool, on the taps' device: the streams whose keyframe taps hold a NaN or an infinity. A NaN or an
    infinity in either tap makes the sum of both taps' sums NaN or infinite, and that times 0 NaN (where a finite
    sum gives 0): five ops in all, for a check on every keyframe. Finite values overflow the sum only near float32's
    largest magnitudes, far outside what a feature map holds."""
    return (_sums(key.enc) + _sums(key.dec)).mul_(0).ne(0)


def _where(tensors: Any) -> set[str]:
    """``"<dtype> on <device>"`` of each floating tensor, as a set."""
    return {f"{t.dtype} on {t.device}" for t in tensors if t.is_floating_point()}


def _nothing() -> None:
    """What :meth:`ShortcutV2V.compile` wraps to have ``torch.compile`` check its options."""


#: how many programs captured for other input signatures (export) a module keeps, the least recently used dropped first;
#: above the sub-batch sizes of mixed batches of many streams (each size is a signature), which would else be
#: captured again and again in turn
MAX_RECAPTURED = 64
#: how many frame sizes a module remembers the decoder tap's size of (to refuse a reference made at another size)
MAX_TAP_SIZES = 64

#: per input layout, how many captures asked for a symbolic batch size may come back without one (export fixed the
#: size, or failed with it) before the module asks no more (a model whose code fixes every batch size would else
#: pay two captures for each)
MAX_BATCH_FIXED = 2


_TRAINING = operator.attrgetter("training")


def _moded_modules(teacher: nn.Module, keyframe: fx.GraphModule) -> tuple[tuple[str, nn.Module], ...]:
    """The generator's modules whose training mode could change what its programs compute, by qualified name: every
    module an fx program calls whole, with the modules inside it (a ``forward`` may read ``self.training``: a dropout,
    a norm's statistics, ``RReLU``, a parametrization's power iteration), and every dropout and norm with running
    statistics (what export fixed the modes of when it captured: switched on later, they would not be)."""
    called = {str(n.target) for n in keyframe.graph.nodes if n.op == "call_module"}
    inside = tuple(name + "." for name in called)
    return tuple(
        (name, m) for name, m in teacher.named_modules()
        if name and (isinstance(m, MODED_TYPES) or ((name in called or name.startswith(inside)) and _reads_training(m)))
    )


def _reads_training(module: nn.Module) -> bool:
    """Whether a module's ``forward`` may read its training mode: it names ``training`` (a ``Conv2d``'s or a ``ReLU``'s
    does not, ``RReLU``'s and a parametrization's do), or it cannot be told (then: yes). Kept per-frame checks short."""
    code = getattr(type(module).forward, "__code__", None)
    return code is None or "training" in code.co_names


def _interval_source(policy: KeyframePolicy, given: float | None) -> str:
    """Where :meth:`ShortcutV2V.cost`'s keyframe interval comes from, as its report says it."""
    if given is not None:
        return "as given (cost(interval=...))"
    if getattr(policy, "expected_interval", None):
        return "the policy's expected mean interval (expected_interval, as calibrate() sets it)"
    if getattr(policy, "uses_change", False):
        return ("the policy's largest interval: an adaptive policy keyframes sooner on changing footage, so this is the "
                "best case; calibrate() measures its mean interval on clips")
    return "the policy's interval"


class _ResetOnNewWeights:
    """The block's load-state-dict hook: new weights end the streams of the module the block serves.

    Holds the module weakly; a copy or an unpickled block holds none (inert), so that a block copied out
    of a module (``copy.deepcopy(sv.block)``, ``torch.save(sv.block)``) neither fails to pickle nor ends the
    streams of the module it was copied from when weights are loaded into the copy."""

    def __init__(self, module: ShortcutV2V | None) -> None:
        self._module = None if module is None else weakref.ref(module)

    def __call__(self, _block: nn.Module, _keys: Any) -> None:
        m = None if self._module is None else self._module()
        if m is not None and not m._hold_reset:
            m.reset()

    def __reduce__(self) -> tuple[type, tuple[None]]:
        return (_ResetOnNewWeights, (None,))


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
    * A keyframe whose tap values hold a NaN or an infinity (a non-finite frame, or a teacher
      that overflows on it) cannot serve as a reference: its streams take a keyframe again on
      the next call, whatever the policy says, and a :class:`~shortcutify.NonFiniteKeyframeWarning`
      says so (once per module). The check (one sum per tap) is read on that next call, so a
      keyframe on a GPU does not wait for the device.

    Keyframes are decided per stream: when the policy picks some streams of the batch
    only, those run the teacher and the others the shortcut, in the same call (two
    sub-batches, merged back in order), and a stream's outputs never depend on the other
    streams. This needs every tensor input and output batched as ``[B, ...]``
    (:class:`~shortcutify.StreamSplitError` otherwise). A generator of frame stacks that folds
    each stream's frames into the batch of its taps (``[B·D, C, H, W]`` taps for inputs ``[B, C, D, H, W]``,
    as video U-Nets do) has its B streams take keyframes together (when the policy picks any), and
    a policy that uses the change sees the largest change of any tap row. A policy that ``uses_change``
    (:class:`~shortcutify.AdaptiveKeyframes`) sees the encoder tap's change: the layers up to
    the encoder tap run first, then the policy decides, then the rest of the chosen path.

    The teacher is frozen (``requires_grad=False``, eval mode); only :attr:`block` is
    trainable, and only the block is this module's own: ``state_dict()``, ``parameters()`` and
    ``load_state_dict()`` hold the block alone (keys ``block.*``), never the teacher's weights
    (they are your generator's), however many programs share its layers. ``.to()`` moves the
    teacher too and, if it moved or cast anything, starts new streams (the next call is a keyframe). The module cannot be pickled: use :meth:`save` and :func:`~shortcutify.load`. Calls run under ``torch.no_grad()``. Training (see :func:`shortcutify.distill`)
    uses :meth:`run_keyframe` for the teacher's side and :meth:`shortcut_step` for the
    student's; nothing is patched.

    Attributes:
        block: the :class:`~shortcutify.core.blocks.ShortcutBlock` (cannot be replaced: load other weights
            into it with ``sv.block.load_state_dict(...)``, which ends the streams).
        policy: the keyframe policy.
        config: the :class:`~shortcutify.core.config.ShortcutConfig` (taps, block).
        enc, dec: :class:`~shortcutify.core.taps.TapInfo` of the taps (shapes on the example input).
        skipped_nodes: node names of the teacher that shortcut frames do not run.
        graph_signature: the teacher's graph signature with the taps marked.
        keyframe_program, shortcut_program, inference_program: the fx programs (see
            :mod:`shortcutify.core.programs`).
        last_keyframes: ``[B]`` bool (CPU), which streams ran the full teacher on the most
            recent call (``None`` before the first).
        last_was_keyframe: whether every stream ran the full teacher on the most recent call
            (for one stream: whether it was a keyframe).
        distilled_interval: the keyframe interval α of the policy the block was last distilled
            with (:func:`~shortcutify.distill` sets it; saved and loaded with the block), so
            trained on gaps up to ``α - 1`` frames; ``None`` if unknown. Setting a policy whose
            ``interval`` is larger (``sv.policy = ...``) warns.
    """

    def __init__(
        self,
        teacher: nn.Module,
        cut: Cut,
        block: ShortcutBlock,
        policy: KeyframePolicy,
        example_inputs: tuple[Any, ...],
        recapture: Callable[[tuple[Any, ...], bool], Cut] | None = None,
    ) -> None:
        super().__init__()
        programs = build_programs(cut, block)
        # the programs share the teacher's modules: held outside the module tree, so that
        # state_dict(), parameters() and load_state_dict() see only what this module owns
        self._main = programs
        # the arguments the programs take by keyword: the inputs, and fixed ones whose values they check (none under export)
        taken = list(inspect.signature(programs.keyframe.forward).parameters)
        self._fixed_keywords = tuple(taken[len(example_inputs):])
        self._input_names = tuple(taken[: len(example_inputs)])
        # (an export capture's streams are told from positional inputs only: its inputs are not taken by keyword)
        self._keywords = frozenset(taken if cut.captured.method == "fx" else self._fixed_keywords)
        self._defaults: dict[str, Any] | None = None  # forward()'s defaults, read when a call first needs them
        self.block = block
        self._policy = as_policy(policy)
        self.enc: TapInfo = cut.enc
        self.dec: TapInfo = cut.dec
        self._copy_enc = cut.copy_enc  # a later in-place op may change the encoder tap's value
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
            motion_prior=block.motion_prior,
        )
        # a graph specialised on the example's shapes (export) is captured again, once, for
        # every other input signature (once for the batch sizes >= 2 of a layout, where the model
        # lets export keep the batch symbolic); these share the block and are dropped by .to()
        self._recapture = recapture if cut.captured.shape_specific else None
        self._capture_key = _program_key(tuple(example_inputs))
        # key -> (programs, the batch guard of a program for many batch sizes); least recently used first
        self._recaptured: OrderedDict[tuple, tuple[Programs, BatchGuard | None]] = OrderedDict()
        self._batch_fixed: Counter[tuple] = Counter()  # per layout, the captures where export fixed the batch size
        self._teacher = [teacher]  # not a submodule: its weights are already in the programs
        self._moded = _moded_modules(teacher, programs.keyframe)
        self._moded_only = tuple(m for _, m in self._moded)
        self._example = tuple(x.detach().to("cpu", copy=True) if isinstance(x, Tensor) else x for x in example_inputs)
        # the inputs given in the weights' dtype (frames): another dtype there is a mistake _explain_dtype names; a
        # side input given in another (a float64 timestep the generator casts itself) is the generator's own business
        weights = next(block.parameters()).dtype
        self._typed = tuple(isinstance(x, Tensor) and x.is_floating_point() and x.dtype == weights for x in example_inputs)
        self._fixed_args: dict[str, Any] = dict(cut.captured.fixed_args)
        self._leaf_modules = tuple(cut.captured.leaf_modules)
        self._state: _State | None = None
        # forward() holds the lock (taken without waiting: a call from another thread meanwhile is refused) and notes
        # its thread (held in a list: set twice per call without nn.Module's attribute bookkeeping)
        self._call_lock = threading.Lock()
        self._calling: list[int | None] = [None]
        # frame shapes (_frame_key) -> the decoder tap's (Hf, Wf) for them, from every keyframe of new inputs; least
        # recently noted first (predict and run_shortcut refuse a reference made for another size)
        self._tap_sizes: OrderedDict[tuple, tuple[int, int]] = OrderedDict()
        self._note_tap_size(tuple(example_inputs), {}, cut.dec.shape)
        self._compile_options: CompileOptions | None = None
        self._runners: dict[int, tuple[Programs, Runner]] = {}
        self.last_keyframes: Tensor | None = None
        self._distilled_interval: int | None = None
        self._warned_non_finite = False
        self.train(False)
        # new block weights (sv.load_state_dict or sv.block.load_state_dict) end every stream: a reference
        # prepared by the old weights would otherwise serve the next shortcut frames
        self._hold_reset = False
        self.block.register_load_state_dict_post_hook(_ResetOnNewWeights(self))
        self._teacher_was = self._teacher_where()  # (where the generator was placed: see _explain_placement)
        self._on_meta = False  # (moved to the meta device by .to("meta"): weights without values)

    def _placement(self) -> list[tuple[torch.device, torch.dtype]]:
        """Device and dtype of every tensor the block, the teacher and the programs hold."""
        tensors = itertools.chain(
            self.block.parameters(), self.block.buffers(), self._teacher[0].parameters(), self._teacher[0].buffers(),
            *(p.parameters() for p in (self._main.keyframe, self._main.shortcut, self._main.inference)),
            *(p.buffers() for p in (self._main.keyframe, self._main.shortcut, self._main.inference)),
        )
        return [(t.device, t.dtype) for t in tensors]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ShortcutV2V:
        # .to()/.cuda()/.double() also reach the teacher: the programs share its submodules
        # but hold their own references to tensors the graph reads directly
        before = self._placement()
        self._teacher[0]._apply(fn, *args, **kwargs)
        for program in (self._main.keyframe, self._main.shortcut, self._main.inference):
            program._apply(fn, *args, **kwargs)
        out = super()._apply(fn, *args, **kwargs)
        self._teacher_was = self._teacher_where()
        self._on_meta = any(t.is_meta for t in itertools.chain(self.block.parameters(), self._teacher[0].parameters()))
        if self._placement() != before:  # (a .to() to where everything already is keeps streams and compiled code)
            self._main.stages = None  # split again from the moved programs
            self._recaptured.clear()
            self._batch_fixed.clear()
            self._runners.clear()  # compiled for the old device or dtype
            self._state = None
        return out

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "block" and "block" in self._modules:
            raise AttributeError(
                "sv.block cannot be replaced: the module's programs are built around the block it was made with (a new "
                "one would be saved and trained by nothing that runs frames). Put other weights into it with "
                "sv.block.load_state_dict(other.state_dict()); for another layout or width build a new module, "
                "shortcutify(generator, ..., resolution=..., width=...)"
            )
        super().__setattr__(name, value)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "a ShortcutV2V cannot be pickled or deep-copied (its programs are fx graphs over your generator's "
            "modules): save the block with sv.save(path) and attach it again with shortcutify.load(generator, path)"
        )

    # ------------------------------------------------------------------ deployment
    def compile(  # type: ignore[override]
        self,
        *,
        backend: str = "inductor",
        mode: str | None = None,
        fullgraph: bool = True,
        cuda_graphs: bool = False,
        dynamic_batch: bool | None = None,
        options: dict[str, Any] | None = None,
    ) -> ShortcutV2V:
        """Compile what :meth:`forward` runs per frame; returns ``self``.

        The keyframe program, the block's reference preparation and the shortcut (inference)
        program, and for policies that use the change the staged head and rests, are each
        compiled with ``torch.compile`` on first use, for each input signature it meets (for
        batch sizes, see ``dynamic_batch``). The stateful per-stream logic stays in Python. Keyframe outputs stay
        the teacher's within float tolerance (compiled code may reorder float operations).
        A ``.to()`` that moves or casts drops the compiled versions (they are compiled again on
        the next call); one to where everything already is keeps them.
        Training calls (:meth:`run_keyframe`, :meth:`run_shortcut`, :meth:`predict`) are
        not compiled.

        Args:
            backend: ``torch.compile``'s backend.
            mode: ``torch.compile``'s mode (``None`` is its default).
            fullgraph: raise on a graph break instead of running pieces eagerly.
            cuda_graphs: also capture each program as a CUDA graph (``mode="reduce-overhead"``;
                CUDA tensors only), for the launch-bound small frames; outputs and the
                module's state are copied out of the graphs' memory.
            dynamic_batch: how the sub-batches of per-stream keyframes (any size from 1 to
                B) are compiled. ``None`` (default): torch's automatic dynamic shapes: each
                program is compiled static for the first size it meets and once more, with
                that dimension symbolic, when it meets a second (and a batch of 1 apart), so
                a batch that never splits stays static. ``True``: the batch dimension is
                symbolic from the first call. ``False``: static shapes, one version per size
                (with B streams and random splits up to B versions of each program). Every
                frame size, dtype and memory layout compiles versions of its own too: past
                ``torch._dynamo.config.recompile_limit`` versions of one program, compiling
                fails with ``fullgraph=True`` (:class:`~shortcutify.RecompileLimitError`, naming these ways out) and
                runs uncompiled without it. Measured
                against padding sub-batches to B (``benchmarks/mixed_batches.py``): the
                symbolic batch ran faster per frame on the CPU and on an H100; padding
                compiles fewer versions.
            options: inductor options (``torch.compile(options=...)``).

        Raises:
            ValueError: ``cuda_graphs`` with a ``mode`` other than ``None`` or ``"reduce-overhead"``,
                a backend name ``torch.compile`` does not know, or a ``mode`` or ``options``
                it refuses (inductor's: an unknown mode or option, or both given).
        """
        if mode is not None and (not isinstance(mode, str) or not mode):
            raise TypeError(f"mode must be a torch.compile mode name or None, got {mode!r}")
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"options must be a dict of inductor options or None, got {type(options).__name__}")
        cuda_graphs, fullgraph = check_flag(cuda_graphs, "cuda_graphs"), check_flag(fullgraph, "fullgraph")
        if dynamic_batch is not None:
            dynamic_batch = check_flag(dynamic_batch, "dynamic_batch")
        if cuda_graphs and mode not in (None, "reduce-overhead"):
            raise ValueError(f"cuda_graphs=True replays the programs with mode='reduce-overhead'; it cannot be combined with mode={mode!r}")
        if isinstance(backend, str):  # (checked now: torch.compile would refuse it only on the next frame)
            from torch._dynamo import list_backends

            known = list_backends(exclude_tags=())
            if backend not in known:
                raise ValueError(f"unknown torch.compile backend {backend!r}; registered: {known}")
        elif not callable(backend):
            raise TypeError(f"backend must be a backend's name or a callable backend, got {type(backend).__name__}")
        chosen = CompileOptions(
            backend=backend, mode=mode, fullgraph=fullgraph, cuda_graphs=cuda_graphs, dynamic_batch=dynamic_batch,
            options=dict(options or {}),
        )
        try:  # (torch.compile checks inductor's mode and options when it wraps a function, before compiling anything)
            chosen.compile(_nothing)
        except RuntimeError as exc:
            raise ValueError(f"torch.compile refuses mode={mode!r}, options={options!r}: {exc}") from exc
        self._compile_options = chosen
        self._runners.clear()
        return self

    @property
    def compile_options(self) -> CompileOptions | None:
        """How :meth:`compile` compiles the per-frame programs (``None``: not compiled)."""
        return self._compile_options

    def uncompile(self) -> ShortcutV2V:
        """Run the programs as captured again (undo :meth:`compile`); returns ``self``."""
        self._compile_options = None
        self._runners.clear()
        return self

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

    def _training_modules(self) -> list[str]:
        """The generator's modules in training mode that its programs would run so: the generator itself
        (``"(the generator)"``), or modules its programs call (fx)."""
        if self._teacher[0].training:
            return ["(the generator)"]
        if not any(map(_TRAINING, self._moded_only)):  # (every frame: the names only when one is in training mode)
            return []
        return [name for name, m in self._moded if m.training]

    def _teacher_back_to_eval(self, which: list[str]) -> None:
        """The generator, or modules of it, were put in training mode after it was wrapped (``generator.train()``,
        ``.train()`` of a module holding it, or of a dropout inside it): its programs would use batch statistics,
        update its running statistics or drop out. Put it back in eval mode, saying so."""
        self._teacher[0].eval()
        what = (
            f"the generator ({type(self._teacher[0]).__name__}) was in training mode" if which == ["(the generator)"] else
            f"modules of the generator ({type(self._teacher[0]).__name__}) were in training mode: {which[:5]}"
            + (f" and {len(which) - 5} more" if len(which) > 5 else "")
        )
        warn_caller(
            f"{what}, put there after shortcutify() (generator.train(), .train() of a module holding it, or of a module "
            "inside it, such as a dropout kept on at test time): the module runs the generator frozen, in eval mode "
            "(running statistics, no dropout), and has put it back in eval mode. Call .train() on the ShortcutV2V only "
            "(it trains the block), or .eval() the generator after training other modules around it"
        )

    def _programs(self, args: tuple, kwargs: dict) -> Programs:
        """The programs for these inputs: the ones built at construction, or (for a
        shape-specific capture and inputs of another signature) ones captured for them."""
        if self._on_meta:
            raise GeneratorStateError(
                "this module's weights are on the meta device (sv.to('meta')): they hold no values, so every frame would "
                "come out as uninitialised memory. Build the module again from the generator (shortcutify(), or load() "
                "for a saved block) on a device with its weights"
            )
        if which := self._training_modules():
            self._teacher_back_to_eval(which)
        if kwargs and not self._keywords.issuperset(kwargs):
            self._drop_defaults_or_refuse(kwargs)
        main = self._main
        if self._recapture is None:
            return main
        key = _program_key(args)  # keyword arguments are fixed ones: the programs check their values
        if key == self._capture_key:
            return main
        if key not in self._recaptured:
            shared = self._any_batch_key(args)
            if shared is None:
                key = self._capture_for(args, key)
            else:  # kept under this signature too (no guard to run on its next calls), until dropped
                self._recaptured.move_to_end(shared)
                self._keep(key, (self._recaptured[shared][0], None))
        self._recaptured.move_to_end(key)
        return self._recaptured[key][0]

    def _drop_defaults_or_refuse(self, kwargs: dict) -> None:
        """Drop (from this call's ``kwargs``, in place) keyword arguments the programs do not take but compute anyway:
        ``forward()``'s defaults given at their values; refuse any other (:class:`FixedArgumentError`)."""
        unknown = [k for k in kwargs if k not in self._keywords]
        fixed = list(self._fixed_keywords)
        if any(k in self._input_names for k in unknown):
            raise FixedArgumentError(
                f"inputs {[k for k in unknown if k in self._input_names]} were given by keyword: a module captured with "
                "torch.export takes its inputs positionally, in the order of the example inputs"
            )
        if self._defaults is None:  # (read once: a caller may pass a default on every frame)
            self._defaults = {n: p.default for n, p in inspect.signature(type(self.teacher).forward).parameters.items()}
        defaults = self._defaults
        if all(k in defaults and same_value(kwargs[k], defaults[k]) for k in unknown):
            for k in unknown:  # (the programs compute them at these values)
                del kwargs[k]
            return
        raise FixedArgumentError(
            f"forward() got keyword argument(s) {unknown} that the captured programs do not take: only the example "
            "inputs' positional arguments vary from call to call; forward()'s other arguments were fixed when the "
            f"generator was wrapped (to their defaults, or to concrete_args; the programs check {fixed or 'none'}). "
            "To vary one from call to call, give it positionally in example_inputs (a keyword-only argument: wrap the "
            "generator in a module whose forward() takes it positionally); to fix another value, wrap the generator "
            "again with concrete_args={'name': value}."
        )

    def _keep(self, key: tuple, entry: tuple[Programs, BatchGuard | None]) -> None:
        """Keep programs under ``key``, dropping the least recently used beyond :data:`MAX_RECAPTURED`."""
        self._recaptured[key] = entry
        while len(self._recaptured) > MAX_RECAPTURED:  # a long stream of ever new sizes keeps a bounded number
            _, (dropped, _) = self._recaptured.popitem(last=False)
            if not any(programs is dropped for programs, _ in self._recaptured.values()):
                self._runners.pop(id(dropped), None)

    def _refuse_unrunnable(self, args: tuple, exc: Exception) -> None:
        """Raise :class:`InputMismatchError` from ``exc`` when the generator itself fails on ``args`` (a
        capture for them failed because the model cannot run them, e.g. a ViT built for one frame size)."""
        own = eager_failure(self.teacher, args, self._fixed_args)
        if own is not None:
            if isinstance(own, RuntimeError):
                self._explain_dtype(args, own)  # (frames of another dtype than the weights: named as such)
            raise self._unrunnable(args, own) from exc

    def _unrunnable(self, args: tuple, own: Exception) -> InputMismatchError:
        """The error for inputs ``args`` the generator itself fails on (with ``own``)."""
        shapes, example = self._shapes(args), self._shapes(self._example)
        why = f"{type(own).__name__}: {str(own).splitlines()[0] if str(own) else ''}"
        if shapes == example:  # (not a matter of size: the dtypes, devices or values of the inputs)
            return InputMismatchError(
                f"the generator itself fails on these inputs ({why}), of the shapes it was wrapped on {shapes}: compare "
                "their dtypes, devices and values with the example inputs'"
            )
        return InputMismatchError(
            f"the generator itself fails on inputs of shape {shapes} ({why}); it was wrapped on {example}. Give frames of a "
            "size the generator runs on (a model built for one frame size, e.g. a ViT's position embeddings, "
            "takes that size only)."
        )

    def _any_batch_key(self, args: tuple) -> tuple | None:
        """The key of a kept program captured with a symbolic batch size that holds for ``args``."""
        split = _batch_and_layout(args)
        if split is None or split[0] < 2:  # (export settles a batch of 1 apart: no symbolic program holds for it)
            return None
        layout = split[1]
        for key, (_, guard) in self._recaptured.items():
            if guard is not None and key[1] == layout and guard(args):
                return key
        return None

    def _capture_for(self, args: tuple, key: tuple) -> tuple:
        """Capture the generator for ``args`` (with a symbolic batch size where it can be); the key kept under."""
        split = _batch_and_layout(args)
        if split is not None and split[0] == 0:
            raise InputMismatchError(
                f"the inputs hold an empty batch (shapes {self._shapes(args)}): this module's generator was captured by "
                "torch.export, which captures it again for inputs of other shapes and cannot capture it for no frame; "
                "skip the call while no stream is left"
            )
        # (a model whose code fixes every batch size, e.g. a loop over it, is not asked again and again)
        any_batch = split is not None and split[0] >= 2 and self._batch_fixed[split[1]] < MAX_BATCH_FIXED
        assert self._recapture is not None
        with contextlib.ExitStack() as stack:  # captured as the model is, not as the caller's autocast would run it
            for device_type in {v.device.type for v in tree_flatten(args)[0] if isinstance(v, Tensor)}:
                stack.enter_context(torch.autocast(device_type, enabled=False))
            try:
                try:
                    cut = self._recapture(args, any_batch)
                except ShortcutifyError:  # (export failed, or its graph does not split so, with a symbolic batch)
                    if not any_batch:
                        raise
                    self._batch_fixed[split[1]] += 1  # type: ignore[index]
                    any_batch = False  # (this size alone, as without a symbolic batch)
                    cut = self._recapture(args, False)
            except (UntraceableModelError, InputMismatchError, InputTypeError) as exc:  # (the last two: the generator fails)
                self._refuse_unrunnable(args, exc)
                raise
            except (UnknownTapError, AmbiguousTapError, TapShapeError, TapOrderError, EmptyCutError) as exc:
                # (the taps, resolved again in this capture: its message speaks of "the example inputs")
                raise type(exc)(
                    f"inputs of shapes {self._shapes(args)} (the example's: {self._shapes(self._example)}) are captured "
                    "again, and the taps do not cut that capture as they cut the example's: the generator's code takes "
                    "another branch or loop count for these inputs (one that depends on the frame size). Give inputs of "
                    f"a size that takes the example's path, or choose taps that every size computes. In that capture: {exc}"
                ) from exc
        for role, tap in (("enc_layer", cut.enc), ("dec_layer", cut.dec)):
            built = self.enc if role == "enc_layer" else self.dec
            if tap.shape[1] != built.shape[1]:
                raise TapShapeError(
                    f"for inputs {[tuple(v.shape) for v in args if isinstance(v, Tensor)]} the {role} "
                    f"{getattr(self.config, role)!r} has {tap.shape[1]} channels; the block was built for "
                    f"{built.shape[1]} (inputs {[list(v.shape) for v in self._example if isinstance(v, Tensor)]}). "
                    "Use inputs of the example's layout, or wrap the generator again for these."
                )
        guard = cut.captured.batch_guard
        if any_batch and guard is None:
            self._batch_fixed[split[1]] += 1  # type: ignore[index]
        if guard is not None:
            key = ("any batch", split[1], key)  # type: ignore[index]
        self._keep(key, (build_programs(cut, self.block), guard))
        return key

    # ------------------------------------------------------------------ state
    @property
    def teacher(self) -> nn.Module:
        """The generator this module was built from (frozen)."""
        return self._teacher[0]

    @property
    def example_inputs(self) -> tuple[Any, ...]:
        """The example inputs given to :func:`~shortcutify.shortcutify` (tensors on CPU)."""
        return self._example

    @property
    def policy(self) -> KeyframePolicy:
        """The keyframe policy (settable; an old-style ``is_keyframe(n)`` policy is adapted, see
        :func:`~shortcutify.core.policy.as_policy`)."""
        return self._policy

    @policy.setter
    def policy(self, policy: KeyframePolicy) -> None:
        new = as_policy(policy)
        state = self._state
        if state is not None and not (getattr(self._policy, "uses_change", False) and getattr(new, "uses_change", False)):
            # the change since each keyframe is kept up to date only while the policy uses it: a policy that
            # starts using it takes a keyframe first (the streams keep their references until then)
            state.previous = state.travelled = state.keyframe_norm = None
        self._policy = new
        self._warn_beyond_distilled()

    @property
    def distilled_interval(self) -> int | None:
        """The keyframe interval α the block was last distilled with (see the class docstring)."""
        return self._distilled_interval

    @distilled_interval.setter
    def distilled_interval(self, interval: int | None) -> None:
        if interval is not None and not is_count(interval):
            raise ValueError(f"distilled_interval must be an integer >= 1 or None, got {interval!r}")
        self._distilled_interval = None if interval is None else int(interval)

    def _warn_beyond_distilled(self) -> None:
        """Warn if the policy allows longer gaps from a keyframe than the block was distilled for:
        shortcut frames further from their keyframe than any training pair may be poor."""
        trained, interval = self._distilled_interval, self._policy.interval
        if trained is not None and interval > trained:
            warn_caller(
                f"the keyframe policy {self._policy!r} allows {interval - 1} frames from a keyframe, but the block was "
                f"distilled with interval {trained}, on gaps up to {trained - 1}: shortcut frames further from their "
                "keyframe may be poor. Distil again with this policy set (distill() trains on the gaps of sv.policy), "
                f"or use a policy of interval <= {trained}."
            )

    @property
    def last_was_keyframe(self) -> bool:
        """Whether the last call ran the full generator on every stream (``last_keyframes`` says per stream;
        ``False`` before the first call)."""
        return self.last_keyframes is not None and bool(self.last_keyframes.all())

    def reset(self, streams: Any = None) -> None:
        """Forget the reference: the next call starts new streams with a keyframe.

        Args:
            streams: which streams (batch entries) to reset: indices or a ``[B]`` bool mask;
                ``None`` (default) resets all; an empty selection none. The others keep their
                reference and count. Before the first frame (or after ``reset()``) there is no
                batch yet: indices are not checked against one, and nothing is kept to reset.

        Raises:
            IndexError: an index is outside the batch of the current streams, or ``streams``
                holds neither integers nor bools.
        """
        state = self._state
        if streams is None:
            self._state = None
            return
        try:
            index = torch.as_tensor(streams) if not isinstance(streams, (str, bytes)) else None
        except (TypeError, ValueError, RuntimeError):
            index = None
        if index is None:
            raise IndexError(f"reset(streams=...) takes stream indices (integers) or a bool mask, got {streams!r}")
        if index.numel() == 0:
            return  # no stream named (an empty list is float to torch.as_tensor)
        if index.is_floating_point() or index.is_complex():
            raise IndexError(f"reset(streams=...) takes stream indices (integers) or a bool mask, got {streams!r}")
        if state is None:
            return  # nothing kept: every stream starts with a keyframe anyway (no batch to check indices against)
        n = state.since_keyframe.shape[0]
        if index.dtype == torch.bool:
            if index.shape != (n,):
                raise IndexError(f"reset(streams=mask) needs a bool mask of shape [{n}] (one per stream), got {tuple(index.shape)}")
            mask = index.cpu()
        else:
            index = index.reshape(-1).long().cpu()
            if int(index.min()) < -n or int(index.max()) >= n:
                raise IndexError(f"reset(streams={streams!r}): the current batch has {n} streams (indices 0..{n - 1})")
            mask = torch.zeros(n, dtype=torch.bool)
            mask[index] = True
        state.stale = state.stale | mask

    @property
    def reference(self) -> Reference | None:
        """The current reference state (``None`` before the first frame or after :meth:`reset`)."""
        return None if self._state is None else self._state.reference

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """:meth:`torch.nn.Module.load_state_dict`, all or nothing: a state dict that does not fit
        (keys missing or unexpected under ``strict``, a tensor of another shape) raises and leaves
        the block and the streams as they were (PyTorch's copies the entries that fit before it
        raises); new weights end every stream, as :meth:`reset` does."""
        backup = {k: v.detach().clone() for k, v in self.block.state_dict().items()}
        self._hold_reset = True  # the streams end once, when the new weights are in
        try:
            result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        except Exception as exc:
            self.block.load_state_dict(backup)  # (its own keys and shapes: cannot fail)
            if isinstance(state_dict, Mapping) and set(state_dict) & set(backup) and not any(str(k).startswith("block.") for k in state_dict):
                raise RuntimeError(
                    f"{exc}\n(the keys lack the module's 'block.' prefix: this is the block's own state dict; load it with "
                    "sv.block.load_state_dict(state), or prefix its keys with 'block.')"
                ) from exc
            raise
        finally:
            self._hold_reset = False
        self.reset()
        return result

    def train(self, mode: bool = True) -> ShortcutV2V:
        """Only the block changes mode; the teacher stays in eval mode."""
        self.training = mode
        self.block.train(mode)
        return self

    # ---------------------------------------------------------------- running
    def run_keyframe(self, *args: Any, **kwargs: Any) -> KeyframeOutput:
        """Run the teacher: its output and the encoder/decoder tap values.

        Raises:
            InputMismatchError, InputTypeError: inputs unlike the example inputs (dimensions, channels, dtype), or
                the generator itself cannot run them (e.g. a frame size it does not take).
        """
        out, a, f = self._explained(args, kwargs, lambda: self._programs(args, kwargs).keyframe(*args, **kwargs))
        self._note_tap_size(args, kwargs, f.shape)
        return KeyframeOutput(out, a, f)

    def _note_tap_size(self, args: tuple, kwargs: dict, dec_shape: Any) -> None:
        """Remember the decoder tap's size ``dec_shape[-2:]`` for inputs shaped like ``args``, ``kwargs``."""
        key = _frame_key(args, kwargs)
        self._tap_sizes[key] = (int(dec_shape[-2]), int(dec_shape[-1]))
        self._tap_sizes.move_to_end(key)
        if len(self._tap_sizes) > MAX_TAP_SIZES:
            self._tap_sizes.popitem(last=False)

    def _check_reference_size(self, args: tuple, kwargs: dict, reference: Any) -> None:
        """Refuse a reference made for another decoder tap size than inputs of this shape gave in a keyframe (the
        block would resize the frame's tap to the reference's, and return an output of the other size). Inputs of a
        shape no keyframe met are left to the block, which compares the encoder tap's size with the reference's."""
        made_for = self.block.reference_size(reference)
        size = self._tap_sizes.get(_frame_key(args, kwargs)) if made_for is not None else None
        if size is not None and size != made_for:
            raise InputMismatchError(
                f"the reference was made for a decoder tap of {made_for[0]}x{made_for[1]}, but inputs of shape "
                f"{self._shapes(args)} give one of {size[0]}x{size[1]}: a reference serves frames of the keyframe's "
                "size only. Prepare it from a keyframe of these frames, sv.prepare_reference(sv.run_keyframe(*inputs))"
            )

    def _explained(self, args: tuple, kwargs: dict, run: Callable[[], Any], reference: Any = None) -> Any:
        """``run()`` on inputs ``args`` checked against the example inputs first, its failures explained where the
        inputs, the ``reference`` they are run against or the module's placement explain them (the training and
        low-level calls: :meth:`forward` checks the inputs once per signature itself)."""
        self._check_inputs(args, kwargs, "input")
        try:
            return run()
        except ShortcutifyError:
            raise
        except (RuntimeError, ValueError) as exc:  # (a norm's ValueError on a frame too small for it too)
            self._explain_placement(exc)
            self._explain_dtype(args, exc)
            self._explain_reference(args, reference, exc)
            self._explain_inputs(args, exc)
            raise

    def _explain_reference(self, args: tuple, reference: Any, exc: Exception) -> None:
        """Raise :class:`InputMismatchError` from ``exc`` when ``reference`` holds another number of rows than the
        frames' streams (a reference prepared from a keyframe of other streams)."""
        rows = reference[0].shape[0] if isinstance(reference, tuple) and reference and isinstance(reference[0], Tensor) and reference[0].dim() else None
        batch, example_batch = frames_batch(shapes_of(args)), frames_batch(shapes_of(self._example))
        per_stream_rows = self.enc.shape[0] // example_batch if example_batch > 0 and self.enc.shape[0] % example_batch == 0 else 1
        if rows is not None and batch > 0 and rows != batch * per_stream_rows:
            raise InputMismatchError(
                f"the reference holds {rows} row(s), the frames {batch} stream(s): prepare the reference from a keyframe "
                "of the same streams, sv.prepare_reference(sv.run_keyframe(*inputs))"
            ) from exc

    def prepare_reference(self, keyframe: KeyframeOutput) -> Reference:
        """The block's reference state from a keyframe's tap values (what :meth:`run_keyframe` returns)."""
        if not isinstance(keyframe, (KeyframeOutput, KeyframeTaps)):
            raise TypeError(
                f"prepare_reference takes a keyframe, what sv.run_keyframe(*inputs) returns, got {type(keyframe).__name__}"
            )
        return self.block.prepare_reference(keyframe.enc, keyframe.dec)

    def run_shortcut(self, *args: Any, reference: Reference | KeyframeTaps, return_aligned: bool = False, **kwargs: Any) -> ShortcutOutput:
        """Run a shortcut frame against ``reference``, keeping the predicted feature.

        ``reference``: a prepared reference, or a keyframe's raw :class:`KeyframeTaps`.
        ``return_aligned``: also compute the prediction from the warped reference alone.
        See :meth:`predict` for the output alone.

        Raises:
            InputMismatchError: inputs unlike the example inputs, or a reference made from a keyframe of other
                streams or of frames whose decoder tap has another size.
        """
        def run() -> ShortcutOutput:
            _check_reference(reference)
            self._check_reference_size(args, kwargs, reference)
            return _call_shortcut(self._programs(args, kwargs).shortcut, args, kwargs, reference, return_aligned)

        return self._explained(args, kwargs, run, reference)

    def encode(self, *args: Any, **kwargs: Any) -> Tensor:
        """The encoder tap's value ``[B, Ca, Ha, Wa]`` for these inputs, running only the layers up to it
        (what a policy's :attr:`~shortcutify.FrameSignal.change` is measured on; see :func:`~shortcutify.calibrate`)."""
        with torch.no_grad():
            return self._explained(args, kwargs, lambda: self._programs(args, kwargs).staged().head(*args, **kwargs)[0])

    def shortcut_step(self) -> ShortcutStep:
        """:meth:`run_shortcut` as a module (what training wraps in ``DistributedDataParallel``)."""
        return ShortcutStep(self)

    def predict(self, *args: Any, reference: Reference, **kwargs: Any) -> Any:
        """The output of a shortcut frame against ``reference``, as :meth:`forward` computes it.

        Unlike :meth:`run_shortcut` it keeps no intermediate value: the predicted decoder
        feature is freed as soon as the tail has read it (lower peak memory).

        Raises:
            InputMismatchError: inputs unlike the example inputs, or a reference made from a keyframe of other
                streams or of frames whose decoder tap has another size.
        """
        _check_reference(reference, taps=False)

        def run() -> Any:
            self._check_reference_size(args, kwargs, reference)
            return self._programs(args, kwargs).inference(*args, **kwargs, **{REFERENCE_INPUT: reference})

        return self._explained(args, kwargs, run, reference)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """One frame of every stream: the generator's inputs for it (a frame ``[B, C, H, W]``, or the arguments
        the module was wrapped with), each of the ``B`` streams a keyframe or a shortcut frame as the policy
        decides; returns what the generator returns. The streams are the module's state: a call while a call
        from another thread is still running is refused (give each thread its own module, or batch the sources
        as streams).

        Raises:
            InputMismatchError, InputTypeError: inputs that do not fit the example inputs (or a frame size the
                generator itself cannot run).
            PlacementError: the generator was moved or cast outside this module.
            GeneratorStateError: the module was moved to the meta device.
            StreamSplitError: per-stream keyframes need an input or output not batched by stream.
            RecompileLimitError: a compiled module (:meth:`compile`) met more input signatures than torch compiles.
            ConcurrentCallError: a call from another thread is still running.
        """
        calling, me = self._calling, threading.get_ident()
        if calling[0] == me:  # (a call from inside a call of this thread: already holds the module)
            return self._forward(args, kwargs)
        if not self._call_lock.acquire(blocking=False):
            raise ConcurrentCallError(
                "this module was called from two threads at once: its streams are its state (each stream's keyframe "
                "reference, its count of frames since), so the threads' frames would be run against one another's "
                "keyframes. Give each thread (each video source) its own module, shortcutify(...) or load(...) on the "
                "same generator, or batch the sources as streams of one call from one thread"
            )
        calling[0] = me
        try:
            return self._forward(args, kwargs)
        finally:
            calling[0] = None
            self._call_lock.release()

    def _forward(self, args: tuple, kwargs: dict) -> Any:
        """:meth:`forward` inside the module's hold, its failures explained."""
        try:
            return self._stream(args, kwargs)
        except ShortcutifyError:
            raise
        except (RuntimeError, ValueError) as exc:  # (a norm's ValueError on a frame too small for it too)
            self._explain_placement(exc)
            self._explain_inputs(args, exc)
            raise

    def _explain_inputs(self, args: tuple, exc: Exception) -> None:
        """Raise :class:`InputMismatchError` from ``exc`` when the generator itself cannot run ``args`` because
        of their size (the captured programs fail where the model would: a frame size it does not take). Other
        failures pass as they are: inputs of the example's shapes (which it runs), memory and device errors
        (running it again would not tell), and an eager failure of another kind than the program's."""
        if isinstance(exc, _PASSING) or self._shapes(args) == self._shapes(self._example):
            return
        own = eager_failure(self.teacher, args, self._fixed_args)
        if own is not None and type(own) is type(exc) and not isinstance(own, _PASSING):
            raise self._unrunnable(args, own) from exc

    @staticmethod
    def _shapes(args: Any) -> list[tuple[int, ...]]:
        """The shapes of the tensors among ``args``."""
        return [tuple(v.shape) for v in tree_flatten(args)[0] if isinstance(v, Tensor)]

    def _teacher_where(self) -> set[str]:
        """The dtypes and devices of the generator's floating weights."""
        return _where(self._teacher[0].parameters())

    def _explain_placement(self, exc: Exception) -> None:
        """Raise :class:`PlacementError` from ``exc`` when the generator's weights are no longer where the block's
        are (moved or cast outside this module: by ``generator.to(...)``, or by another module sharing it)."""
        teacher = self._teacher_where()
        if teacher != self._teacher_was:  # (moved since this module last placed it: not a mixed-precision generator)
            block = _where(self.block.parameters())
            raise PlacementError(
                f"the generator's weights are {', '.join(sorted(teacher))}, this module's block {', '.join(sorted(block))}: "
                "the generator was moved or cast outside this module (generator.to(...), or another ShortcutV2V sharing "
                f"it) ({exc}). Move this module with sv.to(...) to where the generator is (it moves the block and its "
                "programs), or give each module its own copy of the generator"
            ) from exc

    def _stream(self, args: tuple, kwargs: dict) -> Any:
        """:meth:`forward`: one frame of every stream, keyframe or shortcut as the policy decides."""
        sig = _signature(args, kwargs)
        state = self._state
        policy = self._policy
        uses_change = bool(getattr(policy, "uses_change", False))
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():  # (entered only where it changes something)
            if state is not None and state.unchecked:
                self._check_keyframes(state)
            if state is None or state.signature != sig or (uses_change and state.previous is None):
                if state is None or state.signature != sig:  # (inputs the module has not met: checked once)
                    self._check_inputs(args, kwargs, "input")
                    try:
                        return self._keyframe_all(args, kwargs, sig, None, uses_change)
                    except RuntimeError as exc:
                        self._explain_dtype(args, exc)
                        raise
                return self._keyframe_all(args, kwargs, sig, None, uses_change)
            streams = state.since_keyframe.shape[0]
            since = state.since_keyframe + 1
            runner = self._runner(args, kwargs)
            head = None
            change = travelled = current = None
            if uses_change:
                head = runner.head(args, kwargs)
                current = self._kept(head[0])  # before the rest of the programs run
                assert state.previous is not None and state.travelled is not None and state.keyframe_norm is not None
                travelled = state.travelled + tap_l1(current - state.previous)
                change = change_since_keyframe(travelled, state.keyframe_norm)
            # a non-finite tap since the keyframe: no policy could tell a cut from it (queued before the policy's
            # decision is read back, so that reading this adds no wait of its own)
            blind = None if change is None else per_stream(~torch.isfinite(change), streams, torch.any)
            if change is not None:
                change = per_stream(change, streams, torch.max)  # (the largest change of any row: a NaN stays NaN)
            key = self._decide(FrameSignal(since, change), streams) | state.stale
            if blind is not None:
                key = key | blind.cpu()
            n_key = sum(key.tolist())  # (a CPU [B] bool: its count without a tensor op)
            if n_key == streams or (n_key and state.folded):  # (folded taps: no stream can run apart from the others)
                return self._keyframe_all(args, kwargs, sig, head, uses_change, runner)
            if n_key == 0:
                out = self._shortcut(runner, args, kwargs, state.reference, head)
                state.since_keyframe = since
                if uses_change:
                    state.previous, state.travelled = current, travelled
                self.last_keyframes = key
                return out
            return self._mixed(runner, args, kwargs, key, since, head, (current, travelled) if uses_change else None)

    def _check_inputs(self, args: tuple, kwargs: dict, what: str) -> None:
        """Refuse positional inputs unlike the example inputs (:func:`~shortcutify.core.checks.check_like_example`),
        and, where the programs cannot be captured again for other inputs (torch.fx), fewer inputs than the example's
        (an input left out would take forward()'s default inside programs traced with a tensor there)."""
        missing = [n for n in self._input_names[len(args):] if n not in kwargs]
        if missing and self._recapture is None:
            raise InputMismatchError(
                f"{len(args)} input(s) given where the generator was wrapped with {len(self._example)} (example_inputs), "
                f"missing {missing}: torch.fx traced the programs with the example's value there, so every call gives it. To run "
                f"without it, wrap the generator again with example_inputs of the inputs you give (the others then take "
                "forward()'s defaults), or with capture='export', which captures again for other inputs"
            )
        for j, (x, ex) in enumerate(zip(args, self._example)):
            if isinstance(x, Tensor):
                check_like_example(x, ex, f"{what} {j}", j)
            elif isinstance(ex, Tensor):
                raise InputTypeError(
                    f"{what} {j} is a {type(x).__name__}, where the generator was wrapped with a tensor {list(ex.shape)}: "
                    f"give a tensor (torch.from_numpy(a) for a numpy array; frames [H, W, C] from a video reader: "
                    f".permute(2, 0, 1)[None], floating and scaled to the generator's range, e.g. {SCALING_HINT})"
                )

    def _explain_dtype(self, args: tuple, exc: Exception) -> None:
        """Raise :class:`InputTypeError` from ``exc`` when a floating input that the example gave in the weights' dtype
        now differs from the module's (``float64`` frames into a ``float32`` module): the generator's own error names
        neither the input nor the fix. Nothing under autocast, which runs mixed dtypes on purpose."""
        dtype = next(self.block.parameters()).dtype
        for j, x in enumerate(args):
            typed = j < len(self._typed) and self._typed[j]
            if typed and isinstance(x, Tensor) and x.is_floating_point() and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
                raise InputTypeError(
                    f"input {j} is {x.dtype}, but the module's weights are {dtype} (the generator failed: {exc}): convert "
                    f"the frames with .to({dtype}), or the module with sv.to({x.dtype}); for lower precision run "
                    "under torch.autocast"
                ) from exc

    def _kept(self, enc: Tensor) -> Tensor:
        """The encoder tap as the state keeps it (a copy where a later in-place op may change it)."""
        return enc.clone() if self._copy_enc else enc

    def _decide(self, signal: FrameSignal, streams: int) -> Tensor:
        answer = self._policy.select(signal)
        try:
            key = torch.as_tensor(answer).cpu()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PolicyError(f"{self._policy!r}.select() returned {answer!r}, not one bool per stream") from exc
        if key.dtype != torch.bool or key.shape != (streams,):
            raise PolicyError(
                f"{self._policy!r}.select() must return a bool tensor of shape [{streams}] (one per stream), "
                f"got {key.dtype} of shape {tuple(key.shape)}"
            )
        return key

    def _runner(self, args: tuple, kwargs: dict) -> Runner:
        """What a call with these inputs runs: the programs for them, compiled if :meth:`compile` was called."""
        programs = self._programs(args, kwargs)
        entry = self._runners.get(id(programs))
        if entry is None or entry[0] is not programs:
            options = self._compile_options
            device = next(self.block.parameters()).device
            if options is not None and options.cuda_graphs and device.type != "cuda":
                raise ValueError(
                    f"sv.compile(cuda_graphs=True) replays CUDA graphs, but the module is on {device}: move it with "
                    ".cuda() (or .to('cuda')), or compile without cuda_graphs"
                )
            entry = (programs, Runner(programs, self.block, self._compile_options))
            self._runners[id(programs)] = entry
        return entry[1]

    @staticmethod
    def _keyframe_from(runner: Runner, args: tuple, kwargs: dict, head: Any) -> KeyframeOutput:
        """A keyframe; continues from the head's values when they were computed and the split allows."""
        if head is not None and runner.splits_keyframe:
            return KeyframeOutput(*runner.keyframe_rest(args, kwargs, head))
        return KeyframeOutput(*runner.keyframe(args, kwargs))

    @staticmethod
    def _shortcut(runner: Runner, args: tuple, kwargs: dict, reference: Reference, head: Any) -> Any:
        if head is not None:
            return runner.inference_rest(args, kwargs, head, reference)
        return runner.inference(args, kwargs, reference)

    def _keyframe_all(self, args: tuple, kwargs: dict, sig: tuple, head: Any, uses_change: bool, runner: Runner | None = None) -> Any:
        runner = self._runner(args, kwargs) if runner is None else runner  # (the caller's, for these inputs)
        key = self._keyframe_from(runner, args, kwargs, head)
        old = self._state
        if old is not None and old.signature == sig:  # (inputs met before: what they hold is known)
            streams, folded, batched = old.since_keyframe.shape[0], old.folded, old.batched_outputs
        else:
            check_tap_rows(tuple(key.enc.shape), tuple(key.dec.shape), args, (self.config.enc_layer, self.config.dec_layer))
            self._note_tap_size(args, kwargs, key.dec.shape)
            streams = streams_of(args, key.enc.shape[0])
            folded, batched = key.enc.shape[0] != streams, batched_leaves(key.output, streams)
        rows = key.enc.shape[0]
        self._state = _State(
            reference=runner.reference(key.enc, key.dec),
            signature=sig,
            since_keyframe=torch.zeros(streams, dtype=torch.long),
            stale=torch.zeros(streams, dtype=torch.bool),
            previous=key.enc if uses_change else None,  # the programs return a copy where needed
            travelled=torch.zeros(rows) if uses_change else None,
            keyframe_norm=tap_l1(key.enc) if uses_change else None,
            unchecked=[(torch.arange(streams), per_stream(_not_finite(key), streams, torch.any))],
            folded=folded,
            batched_outputs=batched,
        )
        self.last_keyframes = torch.ones(streams, dtype=torch.bool)
        return key.output

    def _mixed(self, runner: Runner, args: tuple, kwargs: dict, key: Tensor, since: Tensor, head: Any,
               change_state: tuple[Tensor, Tensor] | None) -> Any:
        """Some streams take a keyframe, the others the shortcut: two sub-batches, merged in order.

        ``head``: the head's values; ``change_state``: this frame's encoder tap (as kept) and
        the path travelled, when the policy uses the change.
        """
        state = self._state
        assert state is not None
        streams = key.shape[0]
        check_streams(args, kwargs, streams)
        idx_k, idx_s = key.nonzero().flatten(), (~key).nonzero().flatten()
        # the head's values are taken per sub-batch only where each is a feature batched by stream: a size, an
        # index or a count computed from the whole batch (a view(B, ...) after the encoder tap) would be wrong
        # for a sub-batch, so the sub-batches run their heads again then
        head_per_stream = head is not None and all(
            isinstance(v, Tensor) and v.is_floating_point() and v.dim() >= 1 and v.shape[0] == streams for v in head
        )
        parts = []
        for idx in (idx_k, idx_s):
            sub_args, sub_kwargs = take_streams((args, kwargs), idx, streams)
            sub_runner = self._runner(sub_args, sub_kwargs)
            sub_head = None
            if head_per_stream and sub_runner.boundary == runner.boundary:
                sub_head = take_streams(tuple(head), idx, streams)  # continue from the head's values: the programs split alike
            if idx is idx_k:
                keyframe = self._keyframe_from(sub_runner, sub_args, sub_kwargs, sub_head)
                new_ref = sub_runner.reference(keyframe.enc, keyframe.dec)
                parts.append((idx, keyframe.output))
            else:
                reference = type(state.reference)(*take_streams(tuple(state.reference), idx, streams))
                parts.append((idx, self._shortcut(sub_runner, sub_args, sub_kwargs, reference, sub_head)))
        out = scatter_streams(parts, streams, state.batched_outputs)
        state.reference = type(state.reference)(*(merge_streams(o, idx_k, n) for o, n in zip(state.reference, new_ref)))
        if change_state is not None:
            assert state.keyframe_norm is not None
            state.previous, travelled = change_state  # a keyframe's tap is the head's value too
            state.travelled = torch.where(key, torch.zeros_like(travelled), travelled)
            state.keyframe_norm = merge_streams(state.keyframe_norm, idx_k, tap_l1(keyframe.enc))
        state.since_keyframe = torch.where(key, torch.zeros_like(since), since)
        state.stale = state.stale & ~key
        state.unchecked.append((idx_k.cpu(), _not_finite(keyframe)))
        self.last_keyframes = key
        return out

    def _check_keyframes(self, state: _State) -> None:
        """Mark stale the streams whose last keyframe had non-finite taps (they take a keyframe
        again on this call); warn once per module."""
        unchecked, state.unchecked = state.unchecked, []
        for streams, bad in unchecked:
            bad = bad.cpu()
            if not bool(bad.any()):
                continue
            stale = torch.zeros_like(state.stale)
            stale[streams[bad]] = True
            state.stale = state.stale | stale  # (not in place: the state may hold inference tensors)
            if not self._warned_non_finite:
                self._warned_non_finite = True
                warn_caller(
                    f"the keyframe of stream(s) {streams[bad].tolist()} had non-finite values (NaN or infinity) in its taps "
                    f"({self.config.enc_layer!r} or {self.config.dec_layer!r}): shortcut frames from it would be NaN, so "
                    "those streams take a keyframe again now. Check the input frames, and the teacher's precision "
                    "(float16 overflows). (Warned once per module.)",
                    NonFiniteKeyframeWarning,
                )

    # ------------------------------------------------------------------ costs
    def _example_on_device(self) -> tuple[Any, ...]:
        p = next(self.block.parameters())
        return tuple(
            # (copies: the teacher runs on them, and a generator may write into its inputs)
            x.to(device=p.device, dtype=p.dtype if x.is_floating_point() else x.dtype, copy=True) if isinstance(x, Tensor) else x
            for x in self._example
        )

    def cost(self, example_inputs: Any = None, interval: float | None = None) -> CostReport:
        """MACs and parameters of teacher, keyframe path, shortcut path, block, floor and keyframe decision.

        Args:
            example_inputs: inputs to count on (default: the ones given to :func:`shortcutify`).
            interval: mean frames per keyframe α (≥ 1) for the amortised figure (default: the
                policy's ``expected_interval`` if it has one, e.g. a calibrated
                :class:`~shortcutify.AdaptiveKeyframes`, else its ``interval``).
        """
        if interval is not None and not is_interval(interval):
            raise ValueError(f"interval must be a number >= 1 (mean frames from one keyframe to the next), got {interval!r}")
        ex = self._example_on_device() if example_inputs is None else (
            tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        )
        if len(ex) != len(self._example):
            raise ValueError(
                f"example_inputs holds {len(ex)} input(s), the generator was wrapped with {len(self._example)}: give a frame "
                "[B, C, H, W] or a tuple of forward()'s positional arguments, as to shortcutify()"
            )
        self._check_inputs(ex, {}, "example input")
        block = self.block
        with torch.no_grad():
            _, a, f = self.run_keyframe(*ex)
            ref = block.prepare_reference(a, f)
        k_macs, k_ops, k_unc = count_macs(self.run_keyframe, *ex)
        try:
            t_macs, t_ops, t_unc = count_macs(self.teacher, *ex, **self._fixed_args)
        except UntraceableModelError:  # code that only eager PyTorch runs (MONAI's Quicknat: max_unpool2d's checks):
            # the keyframe program is the generator's captured graph (checked equal to it at capture), the same ops
            t_macs, t_ops, t_unc = k_macs, k_ops, k_unc
        r_macs, r_ops, r_unc = count_macs(block.prepare_reference, a, f)
        s_macs, s_ops, s_unc = count_macs(self.predict, *ex, reference=ref)
        b_macs, b_ops, b_unc = count_macs(block, a, ref)
        d_macs, d_ops, d_unc, norm_macs = 0, Counter(), Counter(), 0
        if getattr(self._policy, "uses_change", False):  # every non-forced frame measures the encoder tap's change
            d_macs, d_ops, d_unc = count_macs(lambda x, prev: tap_l1(x - prev), a, a)  # the step from the previous frame
            norm_macs = count_macs(tap_l1, a)[0]  # the keyframe tap's norm, once per keyframe
            if self._main.staged().keyframe is None:  # a decided keyframe then runs the layers up to the tap twice
                norm_macs += count_macs(self._main.staged().head, *ex)[0]
        ref_params = param_count(block.reference_parameters())
        t_params = param_count(self.teacher.parameters())
        s_params = param_count(self.inference_program.parameters())
        b_params = param_count(block.parameters())
        return CostReport(
            teacher=PathCost(t_macs, t_params, dict(t_ops), dict(t_unc)),
            keyframe=PathCost(
                k_macs + r_macs + d_macs + norm_macs, t_params + ref_params, dict(k_ops + r_ops + d_ops), dict(k_unc + r_unc + d_unc)
            ),
            shortcut=PathCost(s_macs + d_macs, s_params, dict(s_ops + d_ops), dict(s_unc + d_unc)),
            block=PathCost(b_macs, b_params, dict(b_ops), dict(b_unc)),
            floor=PathCost(s_macs - b_macs, s_params - b_params, dict(s_ops - b_ops), {}),
            decision=PathCost(d_macs, 0, dict(d_ops), dict(d_unc)),
            interval=float(getattr(self._policy, "expected_interval", None) or self._policy.interval) if interval is None else float(interval),
            interval_source=_interval_source(self._policy, interval),
            input_shapes=tuple(tuple(x.shape) for x in ex if isinstance(x, Tensor)),
        )

    # ------------------------------------------------------------------ saving
    def manifest(self) -> Manifest:
        """What :meth:`save` writes beside the block's weights.

        Raises:
            InputTypeError: an example input is not a tensor (it could not be stored; fix it with ``concrete_args``).
        """
        refuse_untensored(self._example, self.teacher, "save()")
        _, unsaved = encode_fixed_args(self._fixed_args)
        checksum, rounded = teacher_checksums(self.teacher)
        return Manifest(
            config=self.config,
            interval=int(self.policy.interval),
            policy=policy_to_config(self.policy),
            example_inputs=tuple(ExampleInput.of(x) for x in self._example),
            teacher=type(self.teacher).__name__,
            teacher_checksum=checksum,
            teacher_checksums=rounded,
            graph_signature=self.graph_signature,
            fixed_args={k: v for k, v in self._fixed_args.items() if k not in unsaved},
            unsaved_args=unsaved,
            distilled_interval=self.distilled_interval,
            leaf_modules=encode_leaf_modules(self._leaf_modules),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the block and its config (not the teacher) to the directory ``path``; see :func:`~shortcutify.load`."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory path (a str or os.PathLike), got {type(path).__name__}")
        if not os.fspath(path):
            raise ValueError('path is empty: give a directory ("." for the current one; a saved block is a directory of two files)')
        return write_saved(path, self.manifest(), self.block.state_dict())

    def __repr__(self) -> str:
        return (
            f"ShortcutV2V(teacher={type(self.teacher).__name__}, enc={self.config.enc_layer!r} {list(self.enc.shape[1:])}, "
            f"dec={self.config.dec_layer!r} {list(self.dec.shape[1:])}, width={self.block.width}, resolution={self.block.resolution!r}, policy={self.policy!r}, "
            f"block_params={param_count(self.block.parameters()):,}, skipped_nodes={len(self.skipped_nodes)})"
        )
