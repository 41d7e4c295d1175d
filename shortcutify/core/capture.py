"""Capturing a generator as a ``torch.fx`` graph: the one seam where a graph enters.

:func:`capture` returns a :class:`Captured` graph — the fx ``GraphModule``, which node each
module call returned (so that module qualified names work as taps), and per-node shapes and
MACs on the example inputs. Everything downstream (taps, the cut, the programs, costs,
save/load) reads a :class:`Captured` and does not care how it was made; today it is made by
symbolic tracing (:func:`trace`), configured by :class:`CaptureOptions`.
"""

from __future__ import annotations

import inspect
import linecache
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from typing_extensions import TypedDict

from ..errors import UntraceableModelError
from .cost import call_macs

__all__ = ["CaptureOptions", "CaptureKwargs", "Captured", "capture", "trace", "annotate", "as_tuple"]


class CaptureKwargs(TypedDict, total=False):
    """The capture options as keyword arguments of :func:`~shortcutify.shortcutify`, :func:`~shortcutify.list_taps` and :func:`~shortcutify.load`."""

    leaf_modules: type | str | Sequence[type | str]
    tracer_kwargs: dict[str, Any] | None
    concrete_args: dict[str, Any] | None


@dataclass(frozen=True)
class CaptureOptions:
    """How to capture a generator's graph.

    Attributes:
        leaf_modules: module types or qualified names to keep as opaque calls (for
            submodules with data-dependent control flow); taps must lie outside them.
        tracer_kwargs: passed to :class:`torch.fx.Tracer` (e.g. ``autowrap_functions``).
        concrete_args: passed to :meth:`torch.fx.Tracer.trace` to fix non-tensor
            arguments; fixed arguments keep their keyword and default to their value.
    """

    leaf_modules: tuple[type | str, ...] = ()
    tracer_kwargs: dict[str, Any] = field(default_factory=dict)
    concrete_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> CaptureOptions:
        """From the keyword arguments of :class:`CaptureKwargs`; unknown keys are refused."""
        unknown = set(kwargs) - set(CaptureKwargs.__annotations__)
        if unknown:
            raise TypeError(
                f"unknown capture option(s) {sorted(unknown)}; the options are {sorted(CaptureKwargs.__annotations__)}"
            )
        leaf = kwargs.get("leaf_modules") or ()
        if isinstance(leaf, (str, type)):
            leaf = (leaf,)
        return cls(tuple(leaf), dict(kwargs.get("tracer_kwargs") or {}), dict(kwargs.get("concrete_args") or {}))


@dataclass
class Captured:
    """A captured generator.

    Attributes:
        gm: its graph as a ``GraphModule`` (sharing the generator's submodules).
        module_outputs: per module qualified name, the node each of its calls returned
            (``None`` for a call that returned no single tensor).
        macs: per node name, the multiply-adds of that node alone on the example inputs.
        fixed_args: arguments the graph has fixed (the teacher itself needs them to run).
    """

    gm: fx.GraphModule
    module_outputs: dict[str, list[fx.Node | None]]
    macs: dict[str, int] = field(default_factory=dict)
    fixed_args: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> fx.Node | None:
        for n in self.gm.graph.nodes:
            if n.name == name:
                return n
        return None


class _TapTracer(fx.Tracer):
    """An fx tracer that records which node each module call returned."""

    def __init__(self, leaf_modules: Sequence[type | str] = (), **tracer_kwargs: Any) -> None:
        super().__init__(**tracer_kwargs)
        self.leaf_types = tuple(t for t in leaf_modules if isinstance(t, type))
        self.leaf_names = {t for t in leaf_modules if isinstance(t, str)}
        self.module_outputs: dict[str, list[fx.Node | None]] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        qualname = self.path_of_module(m)
        # a tuple/dict output or a constant is not a single tap
        self.module_outputs.setdefault(qualname, []).append(out.node if isinstance(out, fx.Proxy) else None)
        return out


_MACHINERY = ("/shortcutify/core/",)


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame that is not inside torch or shortcutify's core."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        f = fr.filename.replace("\\", "/")
        if "/torch/" not in f and not any(m in f for m in _MACHINERY) and not f.startswith("<"):
            code = (fr.line or linecache.getline(fr.filename, fr.lineno or 0)).strip()
            return f'File "{fr.filename}", line {fr.lineno}, in {fr.name}: {code}'
    return "(no frame of your code found in the traceback)"


def trace(model: nn.Module, options: CaptureOptions = CaptureOptions()) -> Captured:
    """Symbolically trace ``model`` with ``torch.fx`` (no shapes or MACs yet: see :func:`annotate`).

    Raises:
        UntraceableModelError: naming the line of the model that failed and the remedies.
    """
    tracer = _TapTracer(options.leaf_modules, **options.tracer_kwargs)
    concrete = options.concrete_args or None
    try:
        graph = tracer.trace(model, concrete_args=concrete)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        raise UntraceableModelError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}\n"
            f"  failing line: {_user_frame(exc)}\n"
            "Remedies: (1) pass leaf_modules=[TheSubmoduleClass] (or its qualified name) so that the "
            "submodule holding this code is called as a black box; (2) pass "
            "tracer_kwargs={'autowrap_functions': (your_function,)} for a free function with "
            "data-dependent control flow; (3) pass concrete_args={'arg': value} to fix a non-tensor "
            "argument that drives control flow. The taps must then lie outside the opaque parts."
        ) from exc
    if concrete:  # fixed arguments default to their fixed value (callers may leave them out)
        names = list(inspect.signature(model.forward).parameters)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for name, n in zip(names, placeholders):
            if name in concrete:
                n.args = (concrete[name],)
                if n.target != name:  # fx renames it (flag -> flag_1); keep the keyword callers use
                    n.target = name
                    n._rename(name)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    return Captured(gm=gm, module_outputs=tracer.module_outputs, fixed_args=dict(options.concrete_args))


def as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """One frame's inputs as a tuple of ``forward``'s positional arguments."""
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


class _MethodCall:
    """``fn(self_, *args)`` calling the method ``name`` of its first argument."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, self.name)(*args, **kwargs)


def annotate(captured: Captured, example_inputs: Any) -> None:
    """Run the captured graph once on ``example_inputs``; store each node's shape and MACs.

    Shapes go to ``node.meta["tensor_meta"]`` (as :class:`torch.fx.passes.shape_prop.ShapeProp`
    does) and per-node MACs (fvcore, one multiply-add = one) to ``captured.macs``.
    """
    inputs = as_tuple(example_inputs)
    macs: dict[str, int] = {}

    class _Annotator(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            result = super().run_node(n)
            if isinstance(result, torch.Tensor):
                n.meta["tensor_meta"] = (tuple(result.shape), result.dtype)
            if n.op in ("call_module", "call_function", "call_method"):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                fn: Any
                if n.op == "call_module":
                    fn = self.fetch_attr(n.target)
                elif n.op == "call_method":
                    fn = _MethodCall(n.target)
                else:
                    fn = n.target
                macs[n.name] = call_macs(fn, args, kwargs)
            return result

    with torch.no_grad():
        _Annotator(captured.gm).run(*inputs)
    captured.macs = macs


def capture(model: nn.Module, example_inputs: Any, options: CaptureOptions = CaptureOptions()) -> Captured:
    """Capture ``model``'s graph and annotate it with shapes and MACs on ``example_inputs``.

    Raises:
        UntraceableModelError: the graph could not be captured; the message names the
            failing line of the model and the remedies.
    """
    captured = trace(model, options)
    annotate(captured, example_inputs)
    return captured
