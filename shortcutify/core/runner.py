"""What a :class:`~shortcutify.ShortcutV2V` call runs: its programs as they are, or compiled.

A :class:`Runner` holds the callables of one :class:`~shortcutify.core.programs.Programs`
that the stateful module calls per frame: the keyframe program, the block's reference
preparation, the inference program and, for policies that look at the encoder tap, the
staged head and rests. Without :class:`CompileOptions` they are the fx programs themselves;
with them, each is compiled by ``torch.compile`` on its first call (batch sizes as
``CompileOptions.dynamic_batch`` says) and, with ``cuda_graphs``, replayed as a CUDA graph
(``mode="reduce-overhead"``), its outputs copied out of the graph's memory so that the next
replay cannot overwrite what the caller or the module's state still holds. The module's
per-stream logic stays in Python, outside the compiled code.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import RecompileLimitError
from .cut import REFERENCE_INPUT
from .programs import Programs

__all__ = ["CompileOptions", "Runner"]


def _limit_named(compiled: Callable[..., Any], options: CompileOptions) -> Callable[..., Any]:
    """``compiled``, whose failure at torch's recompile limit (``fullgraph=True``) is a :class:`RecompileLimitError`
    naming what counts and the ways out (as it is where this torch names no such failure)."""
    exc_module = torch._dynamo.exc
    limit_hit = getattr(exc_module, "FailOnRecompileLimitHit", None) or getattr(exc_module, "FailOnCacheLimitHit", None)
    if limit_hit is None:
        return compiled

    def run(*args: Any, **kw: Any) -> Any:
        try:
            return compiled(*args, **kw)
        except limit_hit as exc:
            limit = getattr(torch._dynamo.config, "recompile_limit", getattr(torch._dynamo.config, "cache_size_limit", None))
            raise RecompileLimitError(
                f"torch.compile reached its recompile limit (torch._dynamo.config.recompile_limit = {limit}) on one of "
                "the module's programs: every input signature it meets (frame size, batch or sub-batch size, dtype, "
                "memory layout) compiles a version of its own"
                + (" (dynamic_batch=False: one per batch size too)" if options.dynamic_batch is False else "")
                + ". Give fewer signatures, compile with dynamic_batch=None or True, raise the limit, or compile with "
                "fullgraph=False (past the limit the program then runs uncompiled)"
            ) from exc

    return run


@dataclass(frozen=True)
class CompileOptions:
    """How :meth:`~shortcutify.ShortcutV2V.compile` compiles the programs.

    Attributes:
        backend: ``torch.compile``'s backend (``"inductor"``; ``"aot_eager"`` checks capture only).
        mode: ``torch.compile``'s mode (``None``, ``"max-autotune-no-cudagraphs"``, ...);
            ``cuda_graphs=True`` sets ``"reduce-overhead"``.
        fullgraph: refuse graph breaks (raise instead of running pieces eagerly).
        cuda_graphs: replay each program as a CUDA graph (CUDA only; outputs are copied out).
        dynamic_batch: ``True``: compile the batch dimension as a symbol from the first call:
            one version serves every batch and sub-batch size (a size of 1 compiles its own);
            ``False``: static shapes, one version per size; ``None``: torch's automatic dynamic
            shapes, static until a program meets a second size of a dimension, then one
            version with that dimension symbolic.
        options: further ``torch.compile`` options (inductor's ``options=`` dict).
    """

    backend: str = "inductor"
    mode: str | None = None
    fullgraph: bool = True
    cuda_graphs: bool = False
    dynamic_batch: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        mode = "reduce-overhead" if self.cuda_graphs else self.mode
        kwargs: dict[str, Any] = dict(backend=self.backend, fullgraph=self.fullgraph, dynamic=False if self.dynamic_batch is False else None)
        if mode is not None:
            kwargs["mode"] = mode
        if self.options:
            kwargs["options"] = dict(self.options)
        compiled = _limit_named(torch.compile(fn, **kwargs), self)
        if self.dynamic_batch:
            inner = compiled

            def compiled(*args: Any, **kw: Any) -> Any:
                for v in tree_flatten((args, kw))[0]:
                    if isinstance(v, Tensor) and v.dim() > 0:
                        torch._dynamo.maybe_mark_dynamic(v, 0)
                return inner(*args, **kw)

        if not self.cuda_graphs:
            return compiled

        def replay(*args: Any, **kw: Any) -> Any:
            torch.compiler.cudagraph_mark_step_begin()
            return tree_map(lambda v: v.clone() if isinstance(v, Tensor) else v, compiled(*args, **kw))

        return replay


def _reference_fn(block: nn.Module) -> Callable[[Tensor, Tensor], Any]:
    """``block.prepare_reference`` as a function with a code object of its own.

    ``torch.compile`` keeps compiled versions, and counts them against its recompile limit,
    per code object: a function shared by every runner would collect the versions of every
    module and input size in the process and hit the limit.
    """

    def prepare_reference(enc: Tensor, dec: Tensor) -> Any:
        return block.prepare_reference(enc, dec)

    shared = prepare_reference
    return types.FunctionType(shared.__code__.replace(), shared.__globals__, shared.__name__, None, shared.__closure__)


class Runner:
    """The per-frame callables of one set of programs, compiled or not (see the module docstring)."""

    def __init__(self, programs: Programs, block: nn.Module, options: CompileOptions | None = None) -> None:
        self._programs = programs
        self._block = block
        self._options = options
        self._cache: dict[str, Callable[..., Any]] = {}

    @property
    def compiled(self) -> bool:
        return self._options is not None

    def _get(self, name: str, make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        fn = self._cache.get(name)
        if fn is None:
            fn = make()
            if self._options is not None:
                fn = self._options.compile(fn)
            self._cache[name] = fn
        return fn

    def keyframe(self, args: tuple, kwargs: dict) -> tuple[Any, Tensor, Tensor]:
        """``(output, enc, dec)`` of the teacher."""
        return self._get("keyframe", lambda: self._programs.keyframe)(*args, **kwargs)

    def reference(self, enc: Tensor, dec: Tensor) -> Any:
        """The block's reference from a keyframe's taps."""
        return self._get("reference", lambda: _reference_fn(self._block))(enc, dec)

    def inference(self, args: tuple, kwargs: dict, reference: Any) -> Any:
        """A shortcut frame's output."""
        return self._get("inference", lambda: self._programs.inference)(*args, **kwargs, **{REFERENCE_INPUT: reference})

    # --------------------------------------------------------------- staged (policies that use the change)
    @property
    def boundary(self) -> tuple[str, ...]:
        return self._programs.staged().boundary

    @property
    def splits_keyframe(self) -> bool:
        """Whether a keyframe can continue from the head's values (see :class:`~shortcutify.core.programs.Stages`)."""
        return self._programs.staged().keyframe is not None

    def head(self, args: tuple, kwargs: dict) -> tuple[Tensor, ...]:
        """``(enc, *boundary values)``: the layers up to the encoder tap."""
        return self._get("head", lambda: self._programs.staged().head)(*args, **kwargs)

    def keyframe_rest(self, args: tuple, kwargs: dict, head: tuple[Tensor, ...]) -> tuple[Any, Tensor, Tensor]:
        """The keyframe continued from the head's values."""
        rest = self._get("keyframe_rest", lambda: self._programs.staged().keyframe)  # type: ignore[arg-type,return-value]
        return rest(*args, **kwargs, **dict(zip(self.boundary, head)))

    def inference_rest(self, args: tuple, kwargs: dict, head: tuple[Tensor, ...], reference: Any) -> Any:
        """A shortcut frame continued from the head's values."""
        rest = self._get("inference_rest", lambda: self._programs.staged().inference)
        return rest(*args, **kwargs, **dict(zip(self.boundary, head)), **{REFERENCE_INPUT: reference})
