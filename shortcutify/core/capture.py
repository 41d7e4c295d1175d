"""Capturing a generator as a ``torch.fx`` graph: the one seam where a graph enters.

:func:`capture` returns a :class:`Captured` graph — the fx ``GraphModule``, which node each
module call returned (so that module qualified names work as taps), and per-node shapes and
MACs on the example inputs. Everything downstream (taps, the cut, the programs, costs,
save/load) reads a :class:`Captured` and does not care how it was made. Two paths make one:

* ``"fx"``: symbolic tracing (:func:`trace`). Module-level graph, fast, one graph for every
  input shape; fails on code that inspects shapes or types of its inputs (``assert
  x.shape[1] == c``, ``len(x.shape)``, ``torch.jit.isinstance``...) or takes a branch the
  real model does not take.
* ``"export"``: ``torch.export.export(strict=False)`` (:func:`export`). An ATen-level graph
  specialised on the example inputs' shapes (a new input signature is captured again),
  slower to capture; runs such code as Python on real tensors.

``"auto"`` (the default) tries fx, then export. Either way the captured graph is run on
the example inputs beside the eager model, under one random seed, and must give the same
output (:func:`check_against_eager`): a graph that computes something else is an error,
never a silently different program.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import inspect
import io
import itertools
import keyword
import linecache
import logging
import operator
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import fx, nn
from torch.fx import _symbolic_trace
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from typing_extensions import TypedDict

from ..errors import (
    CaptureMismatchError,
    FixedArgumentError,
    GeneratorStateError,
    InputMismatchError,
    InputTypeError,
    ShortcutifyError,
    UntraceableModelError,
)
from .checks import SCALING_HINT, refuse_valueless
from .cost import call_macs

__all__ = [
    "CaptureOptions",
    "CaptureKwargs",
    "Captured",
    "BatchGuard",
    "capture",
    "trace",
    "FixedArgumentError",
    "check_fixed_argument",
    "same_value",
    "export",
    "annotate",
    "check_against_eager",
    "recapture",
    "as_tuple",
    "unwrap",
    "refuse_unusable",
    "METHODS",
    "EXPORT_TOLERANCE",
]

#: the capture paths ``capture=`` accepts
METHODS = ("auto", "fx", "export")
#: how close an exported graph's output must be to the eager model's (``rtol`` and ``atol``):
#: export replaces some ops by their ATen decompositions, which round differently
EXPORT_TOLERANCE = 1e-5


class CaptureKwargs(TypedDict, total=False):
    """The capture options as keyword arguments of :func:`~shortcutify.shortcutify`, :func:`~shortcutify.list_taps` and :func:`~shortcutify.load`."""

    capture: Literal["auto", "fx", "export"]
    leaf_modules: type | str | Sequence[type | str]
    tracer_kwargs: dict[str, Any] | None
    concrete_args: dict[str, Any] | None


@dataclass(frozen=True)
class CaptureOptions:
    """How to capture a generator's graph.

    Attributes:
        method: ``"auto"`` (fx, then export), ``"fx"`` or ``"export"`` (see the module docstring).
        leaf_modules: fx only: module types or qualified names to keep as opaque calls (for
            submodules with data-dependent control flow); taps must lie outside them.
        tracer_kwargs: fx only: passed to :class:`torch.fx.Tracer` (e.g. ``autowrap_functions``).
        concrete_args: fixed non-tensor arguments of ``forward``, by name; fixed arguments keep
            their keyword and default to their value (fx: ``Tracer.trace(concrete_args=)``;
            export: passed as keyword arguments and specialised).
    """

    method: str = "auto"
    leaf_modules: tuple[type | str, ...] = ()
    tracer_kwargs: dict[str, Any] = field(default_factory=dict)
    concrete_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"capture must be one of {METHODS}, got {self.method!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> CaptureOptions:
        """From the keyword arguments of :class:`CaptureKwargs`; unknown keys are refused."""
        unknown = set(kwargs) - set(CaptureKwargs.__annotations__)
        if unknown:
            raise TypeError(
                f"unknown capture option(s) {sorted(unknown)}; the options are {sorted(CaptureKwargs.__annotations__)}"
            )
        leaf = kwargs.get("leaf_modules")
        leaf = () if leaf is None else leaf
        if isinstance(leaf, (str, type)):
            leaf = (leaf,)
        if not isinstance(leaf, (tuple, list)) or not all(
            isinstance(m, str) or (isinstance(m, type) and issubclass(m, nn.Module)) for m in leaf
        ):
            raise TypeError(f"leaf_modules must be nn.Module subclasses or module qualified names, got {leaf!r}")
        for key in ("tracer_kwargs", "concrete_args"):
            if kwargs.get(key) is not None and not isinstance(kwargs[key], dict):
                raise TypeError(f"{key} must be a dict, got {type(kwargs[key]).__name__}")
        tensors = [k for k, v in (kwargs.get("concrete_args") or {}).items() if any(isinstance(t, torch.Tensor) for t in tree_flatten(v)[0])]
        if tensors:
            raise TypeError(
                f"concrete_args {tensors} hold tensors: concrete_args fixes non-tensor arguments (flags, sizes, modes). "
                "Give tensor arguments in example_inputs, a tuple of forward()'s positional arguments in order "
                "(example_inputs=(frame, style)); a keyword-only tensor argument through a wrapper module whose "
                "forward() takes it positionally"
            )
        return cls(
            str(kwargs.get("capture", "auto")),
            tuple(leaf),
            dict(kwargs.get("tracer_kwargs") or {}),
            dict(kwargs.get("concrete_args") or {}),
        )


@dataclass
class Captured:
    """A captured generator.

    Attributes:
        gm: its graph as a ``GraphModule`` (sharing the generator's submodules).
        module_outputs: per module qualified name, the node each of its calls returned
            (``None`` for a call that returned no single tensor).
        macs: per node name, the multiply-adds of that node alone on the example inputs.
        module_names: the qualified names of the generator's submodules (called in the graph or not).
        fixed_args: arguments the graph has fixed (the teacher itself needs them to run).
        method: the path that made it, ``"fx"`` or ``"export"``.
        shape_specific: whether the graph holds only for inputs of the example's shapes,
            dtypes and devices (export); other inputs need a new capture.
        leaf_modules: the ``leaf_modules`` fx kept opaque (``()`` for export).
        batch_guard: for a shape-specific graph captured with a symbolic batch size, what
            tells whether it also holds for other positional inputs that differ from the
            example only in their (common) batch size (export's own guards); ``None`` when
            the graph holds for the example's batch size alone.
    """

    gm: fx.GraphModule
    module_outputs: dict[str, list[fx.Node | None]]
    macs: dict[str, int] = field(default_factory=dict)
    fixed_args: dict[str, Any] = field(default_factory=dict)
    module_names: frozenset[str] = frozenset()
    method: str = "fx"
    shape_specific: bool = False
    leaf_modules: tuple[type | str, ...] = ()
    batch_guard: BatchGuard | None = None

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


_FX_CHECKS = (operator.eq, torch._assert, _symbolic_trace._assert_is_none)  # what fx checks a fixed argument with
_PHBase = _symbolic_trace.PHBase  # fx's placeholder marker in concrete_args (an input, not a value)


def same_value(value: Any, fixed: Any) -> bool:
    """Whether ``value`` is ``fixed`` (equal leaves in the same structure; a tensor never is)."""
    if value is fixed:
        return True
    (v_leaves, v_spec), (f_leaves, f_spec) = tree_flatten(value), tree_flatten(fixed)
    if v_spec != f_spec:
        return False
    for v, f in zip(v_leaves, f_leaves):
        if v is f:
            continue
        if isinstance(v, torch.Tensor) or isinstance(f, torch.Tensor):
            return False
        try:
            if not bool(v == f):
                return False
        except Exception:  # an object whose == does not give a truth value
            return False
    return True


@fx.node.has_side_effect  # kept by dead-code elimination although nothing reads it
def check_fixed_argument(value: Any, fixed: Any, name: str) -> None:
    """Raise :class:`FixedArgumentError` unless ``value`` equals ``fixed``, the value tracing fixed ``name`` to.

    Called at the start of a program traced with ``name`` fixed to its default, so that a call
    with another value is refused instead of silently running the default's branch.
    """
    if not same_value(value, fixed):
        given, was = _short(value), _short(fixed)
        raise FixedArgumentError(
            f"forward()'s argument {name!r} was fixed to {was} when torch.fx traced the generator (a default "
            f"not given in the example inputs is fixed so, as is a value in concrete_args); the captured programs "
            f"compute {name}={was} and cannot run with {name}={given}. To run with a fixed value, wrap the "
            f"generator again with concrete_args={{{name!r}: ...}} holding it; to vary it from call to call (a tensor, "
            "a per-frame input), give it in the example inputs as a positional argument (a keyword-only argument of "
            "forward() can only be fixed: wrap the generator in a module whose forward() takes it positionally)."
        )


def fresh(values: Any) -> Any:
    """``values`` with every tensor copied (same structure): a model that writes into its inputs
    (``x.mul_(2)``) then changes neither the caller's tensors nor the next run's."""
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, values)


def _short(value: Any) -> str:
    """``value`` for a message: a tensor by its shape and dtype, anything else by a ``repr`` cut to a line."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)} ({value.dtype})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _forward_parameters(model: nn.Module) -> tuple[list[str], int, inspect.Signature]:
    """``forward``'s named parameters in the order fx makes their placeholders (without ``self``),
    how many of them are positional, and its signature (as fx reads them)."""
    fn = inspect.unwrap(type(model).forward)
    co = getattr(fn, "__code__", None)
    if co is None:  # (not a Python function: fx cannot trace it anyway)
        return [], 0, inspect.Signature()
    names = list(co.co_varnames[1 : co.co_argcount + co.co_kwonlyargcount])
    return names, co.co_argcount - 1, inspect.signature(fn)


def _defaults_to_fix(model: nn.Module, options: CaptureOptions, n_positional: int | None) -> dict[str, Any]:
    """The parameters of ``forward`` that tracing fixes to their defaults: not given positionally
    (the first ``n_positional``; ``None``: those without a default), not in ``concrete_args``,
    with a default that holds no tensor."""
    names, n_pos, sig = _forward_parameters(model)
    if n_positional is None:
        n_positional = next(
            (i for i, name in enumerate(names[:n_pos]) if sig.parameters[name].default is not inspect.Parameter.empty),
            n_pos,
        )
    fixed: dict[str, Any] = {}
    for i, name in enumerate(names):
        default = sig.parameters[name].default
        if (i < n_pos and i < n_positional) or name in options.concrete_args or default is inspect.Parameter.empty:
            continue
        if any(isinstance(v, (torch.Tensor, _PHBase)) for v in tree_flatten(default)[0]):
            continue
        fixed[name] = default
    return fixed


def _fix_placeholders(model: nn.Module, graph: fx.Graph, concrete: dict[str, Any], checked: set[str]) -> None:
    """Give each fixed argument one placeholder with its keyword, defaulting to its fixed value.

    fx makes one placeholder per leaf of a fixed value (none for ``[]``), named ``name_1``...,
    each checked by an assertion, and for a value that is a container (``[]``, ``(1, 2)``) it
    generates code that flattens ``forward``'s arguments and outputs. A single-leaf
    argument not in ``checked`` keeps fx's placeholder and assertion (with its keyword); the
    others (``checked``, and containers) get one placeholder ``name`` and a
    :func:`check_fixed_argument` node in place of fx's assertions; the graph then has one
    placeholder per argument, and returns the model's output structure itself.
    """
    if any(isinstance(v, _PHBase) for v in tree_flatten(list(concrete.values()))[0]):
        return  # (a PH in concrete_args stays an input: leave the graph as traced)
    names, _, _ = _forward_parameters(model)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    groups: dict[str, list[fx.Node]] = {}
    position = 0
    for name in names:
        count = len(tree_flatten(concrete[name])[0]) if name in concrete else 1
        groups[name] = placeholders[position : position + count]
        position += count
    if position > len(placeholders) or not set(concrete) <= set(groups):
        return  # (not the placeholders fx makes: leave the graph as traced)
    rest = placeholders[position:]  # *args, **kwargs
    replaced: dict[str, list[fx.Node]] = {}  # argument -> fx's assertions of its placeholders
    for name, value in concrete.items():
        if name not in checked and len(groups[name]) == 1:
            continue
        asserts: list[fx.Node] = []
        stack = list(groups[name])
        while stack:
            for user in stack.pop().users:
                if user not in asserts:
                    asserts.append(user)
                    stack.append(user)
        if not all(a.op == "call_function" and a.target in _FX_CHECKS for a in asserts):
            return  # (something else reads them: leave the graph as traced)
        replaced[name] = asserts

    checks: list[tuple[fx.Node, Any, str]] = []
    for name, value in concrete.items():
        group = groups[name]
        if name not in replaced:  # fx's placeholder and assertion, with the caller's keyword
            n = group[0]
            n.args = (value,)
            if n.target != name:  # fx renames it (flag -> flag_1)
                n.target = name
                n._rename(name)
            continue
        with graph.inserting_before(group[0] if group else next(n for n in graph.nodes if n.op != "placeholder")):
            node = graph.placeholder(name, default_value=value)
        order = {n: i for i, n in enumerate(graph.nodes)}
        for a in sorted(replaced[name], key=order.__getitem__, reverse=True):
            graph.erase_node(a)
        for n in group:
            graph.erase_node(n)
        groups[name] = [node]
        checks.append((node, value, name))
    first_op = next(n for n in graph.nodes if n.op != "placeholder")
    for n in [n for name in names for n in groups[name]] + rest:  # forward's order
        first_op.prepend(n)
    with graph.inserting_before(first_op):
        for node, value, name in checks:
            graph.call_function(check_fixed_argument, (node, value, name))
    codegen = graph._codegen
    if isinstance(codegen, fx.graph._PyTreeCodeGen):  # one placeholder per argument now: plain code
        output = next(n for n in reversed(graph.nodes) if n.op == "output")
        if codegen.pytree_info.out_spec is not None:
            output.args = (tree_unflatten(list(output.args[0]), codegen.pytree_info.out_spec),)
        graph._codegen = fx.graph.CodeGen()


def _takes_generator(graph: fx.Graph, root: nn.Module, held: Mapping[Any, str] | None = None) -> list[fx.Node]:
    """The nodes of ``graph`` given a ``torch.Generator`` (``torch.randn(..., generator=g)``): as an attribute of
    ``root`` (export lifts it into one), or as an object the tracer ``held`` by name (fx's ``tensor_attrs``)."""
    by_name = {name: obj for obj, name in (held or {}).items()}

    def is_generator(a: Any) -> bool:
        if isinstance(a, fx.Node) and a.op == "get_attr":
            try:
                a = by_name[a.target] if a.target in by_name else operator.attrgetter(str(a.target))(root)
            except AttributeError:
                return False
        return isinstance(a, torch.Generator)

    found = []
    for n in graph.nodes:
        leaves: list[Any] = []
        fx.node.map_aggregate((n.args, n.kwargs), leaves.append)
        if any(is_generator(a) for a in leaves):
            found.append(n)
    return found


#: what a generator drawing from a torch.Generator of its own can do instead (both capture paths' errors say it)
_OWN_GENERATOR_REMEDY = (
    "Draw the noise outside forward() and pass it as an input, draw it from torch's global generator (torch.randn "
    "without generator=: a stochastic generator, which shortcutify() then names), or keep the module that draws it "
    "whole with capture='fx', leaf_modules=[TheModule] (outside the taps)."
)


def trace(model: nn.Module, options: CaptureOptions = CaptureOptions(), n_positional: int | None = None) -> Captured:
    """Symbolically trace ``model`` with ``torch.fx`` (no shapes or MACs yet: see :func:`annotate`).

    ``n_positional``: how many of ``forward``'s arguments the example inputs give (positionally;
    ``None``: those without a default). Every other argument of ``forward`` with a default that
    holds no tensor, and not in ``options.concrete_args``, is fixed to its default as if given
    in ``concrete_args`` (so ``if encode_only:`` traces); the graph then checks, on every call,
    that such an argument still has its default, and raises :class:`FixedArgumentError`
    naming it otherwise (a keyframe would otherwise run the default's branch silently).
    Arguments fixed by ``concrete_args`` keep their keyword, default to the fixed value, and
    are checked the same way.

    Raises:
        UntraceableModelError: naming the line of the model that failed and the remedies.
    """
    try:
        tracer = _TapTracer(options.leaf_modules, **options.tracer_kwargs)
    except TypeError as exc:
        raise TypeError(f"tracer_kwargs {sorted(options.tracer_kwargs)} do not fit torch.fx.Tracer: {exc}") from exc
    defaults = _defaults_to_fix(model, options, n_positional)
    concrete = {**options.concrete_args, **defaults}
    try:
        with warnings.catch_warnings(), _attributes_kept(model):  # (the graph reads attributes as they were)
            if concrete:  # fx warns that it cannot assert such values: check_fixed_argument does
                warnings.filterwarnings("ignore", message="Was not able to add assertion to guarantee correct input")
            graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        fixed_note = (
            f"(the arguments {sorted(defaults)} were fixed to their defaults)\n" if defaults else ""
        )
        raise UntraceableModelError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}\n"
            f"  failing line: {_user_frame(exc)}\n{fixed_note}"
            "Remedies: (1) pass leaf_modules=[TheSubmoduleClass] (or its qualified name) so that the "
            "submodule holding this code is called as a black box; (2) pass "
            "tracer_kwargs={'autowrap_functions': (your_function,)} for a free function with "
            "data-dependent control flow; (3) pass concrete_args={'arg': value} to fix a non-tensor "
            "argument that drives control flow. The taps must then lie outside the opaque parts. "
            "(4) pass capture='export' (torch.export runs such code on real tensors)."
        ) from exc
    if drawn := _takes_generator(graph, tracer.root, getattr(tracer, "tensor_attrs", None)):
        raise UntraceableModelError(
            f"torch.fx traced {type(model).__name__}, but its forward() passes a torch.Generator to "
            f"{sorted({str(n.target.__name__ if callable(n.target) else n.target) for n in drawn})}: the graph would keep "
            "the one generator object it met while tracing (one made in forward() would not be made again per call), "
            f"and shortcutify's graphs hold no such objects. {_OWN_GENERATOR_REMEDY}"
        )
    if concrete:  # fixed arguments keep their keyword and default to their fixed value (callers may leave them out)
        _fix_placeholders(model, graph, concrete, set(concrete))
    try:
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # e.g. a default value with no Python literal form in the generated code
        raise UntraceableModelError(
            f"torch.fx traced {type(model).__name__} but could not generate code for its graph "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); a default or fixed argument "
            "of forward() probably has no Python literal form. Pass capture='export', or wrap the generator in a "
            "module whose forward() takes tensors alone."
        ) from exc
    return Captured(
        gm=gm, module_outputs=tracer.module_outputs, fixed_args=dict(options.concrete_args), leaf_modules=tuple(options.leaf_modules)
    )


def as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """One frame's inputs as a tuple of ``forward``'s positional arguments (a dict is one argument)."""
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
                # (counted on copies: fvcore's trace runs the op again, and an in-place op, x.unsqueeze_(1) or a
                # LeakyReLU(inplace=True), would be applied to the run's own values twice)
                args, kwargs = fresh((args, kwargs))
                try:
                    macs[n.name] = call_macs(fn, args, kwargs)
                except Exception as exc:  # noqa: BLE001 (whatever fvcore's jit trace trips on: named below)
                    uncountable.append((n, exc))
            return result

    uncountable: list[tuple[fx.Node, Exception]] = []
    with torch.no_grad():
        _Annotator(captured.gm).run(*fresh(inputs))
    if uncountable:  # (raised here, not inside the interpreter, which would append the graph to the message)
        n, exc = uncountable[0]
        vmapped = sorted({_stack_modules(u)[-1] for u, _ in uncountable if "batch_dim" in str(u.target) and _stack_modules(u)})
        fix = (
            "torch.func.vmap in forward: export records it as ops on vmap's batch levels, which neither the MAC "
            "counter nor a cut can split; capture with capture='fx', leaf_modules="
            + (f"{vmapped}" if vmapped else "[the modules that call vmap]") + " (a leaf module runs whole)."
            if any("batch_dim" in str(u.target) for u, _ in uncountable)
            else "Some submodules cannot be counted (e.g. TorchScript or quantized ones): wrap the generator built "
            "from plain modules."
        )
        raise UntraceableModelError(
            f"fvcore's jit trace, which counts the MACs, cannot follow node {n.name!r} ({n.op} {n.target!r}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n{fix}"
        ) from exc
    captured.macs = macs


def _stack_modules(n: fx.Node) -> list[str]:
    """The qualified names of the modules export's ``nn_module_stack`` puts ``n`` in, outermost first."""
    stack = n.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values() if path]


def _is_size(n: fx.Node) -> bool:
    """Whether export's node computes a (symbolic) size or scalar, not a tensor."""
    return isinstance(n.meta.get("val"), (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool))


def _module_outputs_from_stack(graph: fx.Graph) -> dict[str, list[fx.Node | None]]:
    """Per module qualified name, the node each of its calls returned, from export's ``nn_module_stack``.

    The nodes of one call are those whose stack holds that call's key (a second call of a
    module has its own key); the call returned the one node of them that a node outside
    the call uses (``None`` when there are several: not a single tap).
    """
    members: dict[str, list[fx.Node]] = {}
    path_of: dict[str, str] = {}
    for n in graph.nodes:
        for key, value in (n.meta.get("nn_module_stack") or {}).items():
            members.setdefault(key, []).append(n)
            path_of[key] = value[0] if isinstance(value, tuple) else str(value)
    outputs: dict[str, list[fx.Node | None]] = {}
    for key, nodes in members.items():
        path = path_of[key]
        if not path:
            continue
        inside = set(nodes)
        # (a size a module read, which a graph with a symbolic batch shares with later code, is not what it returned)
        leaving = [n for n in nodes if any(u not in inside for u in n.users) and not _is_size(n)]
        outputs.setdefault(path, []).append(leaving[0] if len(leaving) == 1 else None)
    return outputs


#: the loggers through which torch.export reports, at length, the failure that :func:`export` raises named
_EXPORT_LOGGERS = ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export")


@contextlib.contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Silence the loggers ``names`` (below CRITICAL) for the duration."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _stderr_kept_unless_failing() -> Iterator[None]:
    """What is written to stderr within, written there after it if it succeeds (warnings, the model's own
    prints), dropped if it raises (torch.export prints the graphs of a failed export: the error names it)."""
    held = io.StringIO()
    with contextlib.redirect_stderr(held):
        yield
    sys.stderr.write(held.getvalue())


@contextlib.contextmanager
def _spectral_norm_notice_silenced(model: nn.Module) -> Iterator[None]:
    """Silence export's notice that tensor attributes were assigned during export where every attribute it
    names is a weight that ``nn.utils.spectral_norm``'s hook assigns on each call: export traces that hook (the
    graph computes the weight from ``weight_orig`` and follows new weights), so the notice has nothing for the
    user to do. A notice naming any other attribute is kept."""
    from torch.nn.utils.spectral_norm import SpectralNorm

    names = [
        f"self.{path}.{hook.name}" if path else f"self.{hook.name}"
        for path, m in model.named_modules()
        for hook in m._forward_pre_hooks.values()
        if isinstance(hook, SpectralNorm)
    ]
    if not names:
        yield
        return
    allowed = "|".join(sorted((re.escape(n) for n in names), key=len, reverse=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=rf"The tensor attributes? (?:(?:{allowed})(?:, | ))+(?:were|was) assigned during export")
        yield


class BatchGuard:
    """Whether an export graph captured with a symbolic batch size holds for given inputs.

    Export records, beside the graph, the conditions its program assumed of the inputs'
    sizes (``x.size()[0] % 2 == 0``, ``x.size()[0] < 64``, ...): branches the model took on
    the batch size. The graph holds for inputs that differ from the example only in their
    batch size where those conditions hold.
    """

    def __init__(self, guards: Callable[..., Any], leaves: tuple[int, ...], fixed: dict[str, Any]) -> None:
        self._guards, self._leaves, self._fixed = guards, leaves, fixed

    def __call__(self, inputs: tuple[Any, ...]) -> bool:
        """Whether the graph holds for positional ``inputs`` (of the example's layout but for the batch size)."""
        leaves = tree_flatten((tuple(inputs), self._fixed))[0]
        try:
            self._guards(*(leaves[i] for i in self._leaves))
        except AssertionError:  # (how export's guard function says that a condition fails)
            return False
        return True


def _batch_dims(inputs: tuple[Any, ...], fixed: dict[str, Any]) -> tuple[Any, ...]:
    """``dynamic_shapes`` for export: dim 0 of every positional tensor left to export to decide."""
    auto = torch.export.Dim.AUTO
    return tuple({0: auto} if isinstance(x, torch.Tensor) and x.dim() >= 1 else None for x in inputs) + (None,) * len(fixed)


def _symbolic_batch(placeholders: list[fx.Node]) -> bool:
    """Whether export kept the batch size symbolic: dim 0 of every positional input one free symbol, no other dim."""
    sizes = []
    for n in placeholders:
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() == 0 or not all(isinstance(d, int) for d in val.shape[1:]):
            return False
        sizes.append(val.shape[0])
    first = sizes[0] if sizes else None
    return isinstance(first, torch.SymInt) and bool(first.node.expr.is_Symbol) and all(
        isinstance(d, torch.SymInt) and d.node.expr == first.node.expr for d in sizes
    )


def export(
    model: nn.Module, example_inputs: Any, options: CaptureOptions = CaptureOptions(), *, any_batch: bool = False
) -> Captured:
    """Capture ``model`` with ``torch.export.export(strict=False)`` on ``example_inputs``.

    The graph is specialised on the example inputs' shapes. Its placeholders are
    ``forward``'s tensor arguments, in order; its output has the model's structure (tensors
    in tuples, lists and dicts).

    With ``any_batch``, export is asked to keep the batch size (dim 0 of every positional
    tensor) symbolic: where the model allows it, the graph holds for other batch sizes too,
    under conditions that :attr:`Captured.batch_guard` checks (export itself specialises a
    batch of 1, and a model whose code fixes its batch size gets a graph for that size alone).

    Raises:
        UntraceableModelError: export failed (naming the failing line), or ``forward``'s
            arguments or outputs have a structure this path does not support.
    """
    inputs = as_tuple(example_inputs)
    fixed = dict(options.concrete_args)
    try:
        dynamic = _batch_dims(inputs, fixed) if any_batch else None
        # (a failure is raised below, named; torch would also log it at length, and print graphs to stderr).
        # Under no_grad, as torch.fx sees forward(): a grad-mode switch inside it (torch.no_grad(), a reentrant
        # torch.utils.checkpoint) then leaves no trace, where with grad on export records it, as a higher-order op
        # that hides the modules inside, whose output no gradient leaves: the graph would depend on the caller's
        # grad mode, and distillation could not train through it.
        with torch.no_grad(), _quiet(_EXPORT_LOGGERS), _spectral_norm_notice_silenced(model), _stderr_kept_unless_failing():
            exported = torch.export.export(model, inputs, kwargs=fixed or None, strict=False, dynamic_shapes=dynamic)
        gm = exported.module()
    except Exception as exc:  # export raises UserError, GuardOnDataDependentSymNode, RuntimeError, ...
        _refuse_if_eager_fails(model, inputs, fixed)
        raise UntraceableModelError(
            f"torch.export could not capture {type(model).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
            f"  failing line: {_user_frame(exc)}\n"
            "export runs forward() on the example inputs and fails on control flow that depends on tensor values; "
            "try capture='fx' (with leaf_modules= for the part that fails), or fix the value-dependent branch."
        ) from exc
    _check_output_structure(exported.call_spec.out_spec, model)
    leaves, in_spec = tree_flatten((inputs, fixed))
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    batch_guard = _batch_guard(graph, gm, len(inputs), fixed) if any_batch else None
    for n in list(graph.nodes):
        # export's own guards on the example's shapes and dtypes: we capture again for other
        # signatures instead, and the assertions would keep dead code alive
        if not n.users and (
            (n.op == "call_module" and n.target == "_guards_fn")
            or (isinstance(n.target, torch._ops.OpOverload) and n.target._schema.name.startswith("aten::_assert"))
        ):
            graph.erase_node(n)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(leaves) or any(
        isinstance(leaf, torch.Tensor) != (i < len(inputs)) for i, leaf in enumerate(leaves)
    ):
        raise UntraceableModelError(
            f"capture='export' needs forward()'s arguments to be tensors, one per argument (got {len(inputs)} "
            f"argument(s) holding {sum(isinstance(v, torch.Tensor) for v in leaves)} tensor(s)); fix the others with "
            "concrete_args={'name': value}, or use capture='fx'"
        )
    single = {name for name, value in fixed.items() if len(tree_flatten(value)[0]) == 1}
    fixed_names = [name for name in fixed for _ in tree_flatten(fixed[name])[0]]
    for n, leaf, name in zip(placeholders[len(inputs) :], leaves[len(inputs) :], fixed_names):
        if name in single:  # keeps its keyword, defaulting to its fixed value, checked on every call (as on fx)
            n.args = (leaf,)
            n.target = name  # the keyword callers use (fx code binds it to the node's own name)
            with graph.inserting_after(placeholders[-1]):  # (export puts its get_attr nodes before the placeholders)
                graph.call_function(check_fixed_argument, (n, leaf, name))
        else:  # part of a container argument: its value
            n.replace_all_uses_with(leaf)  # type: ignore[arg-type]
            graph.erase_node(n)
    graph.output(_output_arg(graph, iter(out), exported.call_spec.out_spec))
    result = fx.GraphModule(gm, graph, type(model).__name__)
    return Captured(
        gm=result,
        module_outputs=_module_outputs_from_stack(result.graph),
        fixed_args=fixed,
        method="export",
        shape_specific=True,
        batch_guard=batch_guard,
    )


def _batch_guard(graph: fx.Graph, gm: nn.Module, positional: int, fixed: dict[str, Any]) -> BatchGuard | None:
    """The guard of an export graph whose batch size stayed symbolic (``None`` if it did not).

    Needs export's guard function (the call of ``_guards_fn`` on the inputs): without it the
    conditions the graph holds under are unknown, and it is kept for the example's batch size alone.
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if not _symbolic_batch(placeholders[:positional]):
        return None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == "_guards_fn"]
    guards = getattr(gm, "_guards_fn", None)
    if len(calls) != 1 or guards is None or calls[0].kwargs or any(a not in placeholders for a in calls[0].args):
        return None
    return BatchGuard(guards, tuple(placeholders.index(a) for a in calls[0].args), fixed)


_OUTPUT_CONTAINERS = (tuple, list, dict, type(None))


def _rebuilt_in_graph(kind: type) -> bool:
    """Whether an output container of type ``kind`` is rebuilt in the graph: the plain ones, and by a call of
    the type itself a dict subclass (``OrderedDict``; transformers' ``ModelOutput`` and diffusers' ``BaseOutput``
    dataclasses, registered with torch's pytree by their libraries), a namedtuple or a dataclass registered with
    ``torch.utils._pytree.register_dataclass``."""
    if kind is collections.namedtuple:  # (torch's pytree: the node type of every namedtuple, its class the context)
        return True
    return kind in _OUTPUT_CONTAINERS or (isinstance(kind, type) and (issubclass(kind, dict) or dataclasses.is_dataclass(kind)))


def _dataclass_fields(context: Any) -> dict[str, None] | None:
    """The field names of a dataclass node of ``torch.utils._pytree.register_dataclass`` (its context: the names
    of the fields flattened, those that held None) as a dict to fill, ``None`` for another context."""
    if (
        isinstance(context, (list, tuple)) and len(context) == 2
        and all(isinstance(part, (list, tuple)) and all(isinstance(n, str) for n in part) for part in context)
    ):
        return {**dict.fromkeys(context[0]), **dict.fromkeys(context[1])}
    return None


def _keyword_keys(spec: Any) -> bool:
    """Whether a dict subclass node's keys can be passed to its type as keyword arguments (identifiers, not
    Python keywords: the graph's code calls ``Type(key=value, ...)``); a ``defaultdict``'s context is not its keys."""
    keys = spec.context
    return (
        not issubclass(spec.type, collections.defaultdict) and isinstance(keys, (list, tuple))
        and all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in keys)
    )


def _check_output_structure(spec: Any, model: nn.Module) -> None:
    """Export's graph returns its outputs flat; we rebuild tuples, lists and dicts of them (and the containers
    :func:`_rebuilt_in_graph` names) in the graph."""
    stack = [spec]
    while stack:
        s = stack.pop()
        if s.is_leaf():
            continue
        if isinstance(s.type, type) and issubclass(s.type, dict) and s.type is not dict and not _keyword_keys(s):
            raise UntraceableModelError(
                f"capture='export': {type(model).__name__} returns a {s.type.__name__} (a dict subclass) "
                + ("" if issubclass(s.type, collections.defaultdict) else f"with keys {s.context!r}, ")
                + f"which this path cannot rebuild as {s.type.__name__}(key=value, ...); return a plain "
                "dict or a tuple (or wrap the model in a module that does)."
            )
        if isinstance(s.type, type) and not issubclass(s.type, dict) and dataclasses.is_dataclass(s.type) and _dataclass_fields(s.context) is None:
            raise UntraceableModelError(
                f"capture='export': {type(model).__name__} returns a {s.type.__name__}, a dataclass whose pytree "
                "registration this path cannot read back (register it with torch.utils._pytree.register_dataclass); "
                "return a tuple or dict (or wrap the model in a module that does)."
            )
        if not _rebuilt_in_graph(s.type):
            raise UntraceableModelError(
                f"capture='export': {type(model).__name__} returns a {s.type.__name__}; this path rebuilds outputs made of "
                "tensors in tuples, lists, dicts (and dict subclasses such as transformers' ModelOutput, namedtuples, "
                "registered dataclasses). "
                "Return one of those (concrete_args={'return_dict': False} in diffusers and transformers), or wrap "
                "the model in a module that does."
            )
        stack.extend(s.children() if hasattr(s, "children") else s.children_specs)


def _output_arg(graph: fx.Graph, leaves: Iterator[Any], spec: Any) -> Any:
    """The output node's argument for export's flat ``leaves`` (nodes) in the structure ``spec``: tuples, lists
    and dicts as themselves, other containers (:func:`_rebuilt_in_graph`) by a call of their type in the graph."""
    if spec.is_leaf():
        return next(leaves)
    children = [_output_arg(graph, leaves, c) for c in (spec.children() if hasattr(spec, "children") else spec.children_specs)]
    kind = spec.type
    if kind is type(None):
        return None
    if kind in (tuple, list):
        return kind(children)
    if kind is collections.namedtuple:
        return graph.call_function(spec.context, tuple(children))
    if not issubclass(kind, dict):  # a registered dataclass (its context checked by _check_output_structure)
        fields = _dataclass_fields(spec.context) or {}
        return graph.call_function(kind, (), {**fields, **dict(zip(spec.context[0], children))})
    items = dict(zip(spec.context, children))
    return items if kind is dict else graph.call_function(kind, (), items)  # (a dict subclass)


def _tolerance(dtype: torch.dtype) -> float:
    """How close export's output must be for ``dtype`` (half types round at about 1e-3)."""
    return EXPORT_TOLERANCE if dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128) else 1e-2


def _differs(e: torch.Tensor, g: torch.Tensor, exact: bool) -> str | None:
    """Why ``g`` is not ``e`` (``None`` when it is); NaNs in the same places count as equal."""
    if e.shape != g.shape or e.dtype != g.dtype:
        return f"{tuple(e.shape)} {e.dtype} from the model, {tuple(g.shape)} {g.dtype} from the graph"
    if e.is_complex():
        e, g = torch.view_as_real(e), torch.view_as_real(g)
    if not e.is_floating_point():
        return None if torch.equal(e, g) else "differs"
    if exact:
        same = (e == g) | (e.isnan() & g.isnan())
        if bool(same.all()):
            return None
    else:
        tol = _tolerance(e.dtype)
        if torch.allclose(e, g, rtol=tol, atol=tol, equal_nan=True):
            return None
    finite = torch.isfinite(e) & torch.isfinite(g)
    worst = (e.double() - g.double())[finite].abs().max().item() if bool(finite.any()) else float("nan")
    return f"differs {'' if exact else f'beyond {_tolerance(e.dtype)} '}(max |difference| {worst:.3g})"


def _same_leaf(e: Any, g: Any) -> bool:
    """Whether two non-tensor output leaves are equal; an object holding tensors that the pytree utilities do not
    open (an unregistered dataclass) is refused, naming the fix."""
    try:
        return bool(e == g)
    except (RuntimeError, TypeError, ValueError) as exc:  # (comparing objects that hold tensors)
        raise UntraceableModelError(
            f"the model returns a {type(e).__name__} that the capture check cannot compare ({type(exc).__name__}: "
            f"{exc}), e.g. an object holding tensors that torch's pytree utilities do not open: return a tuple or a "
            f"dict instead, or register the class (torch.export.register_dataclass({type(e).__name__}) for a "
            "dataclass) before wrapping the generator"
        ) from exc


def check_against_eager(captured: Captured, model: nn.Module, example_inputs: Any) -> None:
    """Run the captured graph and the eager model on ``example_inputs`` under one random seed; compare.

    Exact for fx on CPU; within :data:`EXPORT_TOLERANCE` (relative and absolute) for export
    or on other devices. Where an exact comparison fails, a second pair of calls decides: the
    graph is accepted when it then equals the model (the first difference was the machine's
    kernels), or when the model's own outputs varied between its two calls by a rounding-sized
    amount and the graph's lie within :data:`SPREAD_FACTOR` times that variation.

    Raises:
        CaptureMismatchError: the outputs differ in structure, shape, dtype or value.
        UntraceableModelError: the captured graph fails to run on the example inputs.
    """
    inputs = as_tuple(example_inputs)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    other = "export" if captured.method == "fx" else "fx"

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        args = fresh(args)  # a model that writes into its inputs must not see (nor leave) other values
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(0)
            return fn(*args, **kwargs)

    try:
        expected = run(model, *inputs, **captured.fixed_args)
    except Exception as exc:  # the generator itself: not a capture matter
        raise example_refused(model, inputs, exc) from exc
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # (fx prints its own traceback of a failing graph: named below)
            got = run(captured.gm, *inputs)
    except Exception as exc:
        raise UntraceableModelError(
            f"the graph that {captured.method} captured from {type(model).__name__} fails on the example inputs "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): it is not the program the model runs "
            f"(e.g. tracing took a branch the model does not take). Try capture={other!r}."
        ) from exc
    exact = captured.method == "fx" and all(
        not (isinstance(v, torch.Tensor) and v.device.type != "cpu") for v in tree_flatten(expected)[0]
    )
    drawn = _takes_generator(captured.gm.graph, captured.gm)
    problem = _mismatch(expected, got, exact)
    if problem and exact and not drawn:
        # CPU kernels are not always bitwise reproducible from call to call (a loaded machine's thread scheduling): a
        # difference that a second pair of calls does not repeat was the machine's; where the model's own outputs
        # vary from call to call, the graph's must lie within that variation
        again, got_again = run(model, *inputs, **captured.fixed_args), run(captured.gm, *inputs)
        if _mismatch(again, got_again, exact) is None or _within_spread(expected, again, got_again):
            problem = None
    if problem is None and drawn and not _repeatable(run(captured.gm, *inputs), got, exact) \
            and _repeatable(run(model, *inputs, **captured.fixed_args), expected, exact):
        problem = "its second call differs from its first, where the model's do not"
    if problem and drawn:
        # (export lifts the torch.Generator into the graph as a copy, made while capturing: it goes on with its own
        # sequence from call to call, where the model makes a fresh one per call or draws from its own)
        raise CaptureMismatchError(
            f"{type(model).__name__}'s forward() draws random numbers from a torch.Generator of its own "
            f"({sorted({str(getattr(n.target, '__name__', n.target)) for n in drawn})}), and the graph that "
            f"{captured.method} captured holds a copy of it, made while capturing, whose sequence goes its own way: "
            f"{problem}, and keyframes would differ from the model's outputs. {_OWN_GENERATOR_REMEDY}"
        )
    if problem:
        raise CaptureMismatchError(
            f"the graph that {captured.method} captured from {type(model).__name__} computes something other than the "
            f"model on the example inputs: {problem}. Try capture={other!r}."
        )


def _mismatch(expected: Any, got: Any, exact: bool) -> str | None:
    """What differs between the model's outputs ``expected`` and the graph's ``got`` (``None`` when nothing does):
    structure, leaf kinds, tensor shapes, dtypes and values (exactly or within :func:`_tolerance`), other leaves."""
    (e_leaves, e_spec), (g_leaves, g_spec) = tree_flatten(expected), tree_flatten(got)
    if e_spec != g_spec:
        return f"the model returns {e_spec}, the graph {g_spec}"
    for i, (e, g) in enumerate(zip(e_leaves, g_leaves)):
        if isinstance(e, torch.Tensor) != isinstance(g, torch.Tensor):
            return f"output {i}: a {type(e).__name__} from the model, a {type(g).__name__} from the graph"
        if isinstance(e, torch.Tensor):
            why = _differs(e, g, exact)
            if why:
                return f"output {i}: {why}"
        elif e is not g and not _same_leaf(e, g):
            return f"output {i}: {e!r} from the model, {g!r} from the graph"
    return None


SPREAD_FACTOR = 4.0
"""How far beyond the model's own call-to-call variation a graph's outputs may lie (see :func:`_within_spread`)."""


def _within_spread(first: Any, again: Any, got: Any) -> bool:
    """Whether the graph's outputs ``got`` lie within :data:`SPREAD_FACTOR` times the variation between two calls of
    the model (``first``, ``again``), where that variation is of rounding size (at most ``max(tolerance, 1e-3)``
    times ``1 + max |output|`` per floating leaf: a model whose outputs vary by more, e.g. one that draws from
    Python's or NumPy's random numbers, which a graph keeps as constants, is not judged this way). Every other leaf,
    and every floating leaf the model repeats exactly, must be equal."""
    (f_leaves, f_spec), (a_leaves, a_spec), (g_leaves, g_spec) = tree_flatten(first), tree_flatten(again), tree_flatten(got)
    if not f_spec == a_spec == g_spec:
        return False
    varied = False
    for f, a, g in zip(f_leaves, a_leaves, g_leaves):
        if not (isinstance(f, torch.Tensor) and isinstance(a, torch.Tensor) and isinstance(g, torch.Tensor)):
            if not (_same_leaf(a, g) or a is g):
                return False
            continue
        if _differs(a, g, exact=True) is None:
            continue
        if not (a.is_floating_point() and f.shape == a.shape == g.shape and f.dtype == a.dtype == g.dtype):
            return False
        if not torch.equal(f.isnan(), a.isnan()) or not torch.equal(a.isnan(), g.isnan()):
            return False
        finite = torch.isfinite(f) & torch.isfinite(a) & torch.isfinite(g)
        if not (torch.equal(f[~finite], a[~finite]) and torch.equal(a[~finite], g[~finite])):
            return False  # (infinities in the same places with the same signs; NaNs checked above)
        f64, a64, g64 = f.double()[finite], a.double()[finite], g.double()[finite]
        spread = (f64 - a64).abs().max().item() if f64.numel() else 0.0
        scale = 1.0 + (a64.abs().max().item() if a64.numel() else 0.0)
        if spread == 0.0 or spread > max(_tolerance(a.dtype), 1e-3) * scale:
            return False
        if (g64 - a64).abs().max().item() > SPREAD_FACTOR * spread:
            return False
        varied = True
    return varied


def _repeatable(again: Any, first: Any, exact: bool) -> bool:
    """Whether a second run's outputs ``again`` equal the first run's ``first`` (tensor leaves as
    :func:`check_against_eager` compares them; other leaves equal)."""
    return _mismatch(first, again, exact) is None


def eager_failure(model: nn.Module, inputs: tuple[Any, ...], fixed: dict[str, Any]) -> Exception | None:
    """What the generator itself raises on ``inputs`` (``None`` when it runs them): run without autograd, on
    copies (a generator may write into its inputs) and under a forked random state, so that asking leaves
    the caller's tensors and random stream as they were."""
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model(*fresh(inputs), **fixed)
    except Exception as exc:  # noqa: BLE001 (whatever the generator raises: named by the caller)
        return exc
    return None


def _refuse_if_eager_fails(model: nn.Module, inputs: tuple[Any, ...], fixed: dict[str, Any]) -> None:
    """After a failed capture: raise :func:`example_refused`'s error if the generator itself fails on the inputs."""
    failure = eager_failure(model, inputs, fixed)
    if failure is not None:
        raise example_refused(model, inputs, failure) from failure


def example_refused(model: nn.Module, inputs: tuple[Any, ...], exc: Exception) -> Exception:
    """The error for a generator that fails on its own example inputs (``exc``): :class:`InputTypeError`
    where some are integer tensors (``uint8`` video not yet scaled), else :class:`InputMismatchError`."""
    shapes = [f"{list(v.shape)} {str(v.dtype).replace('torch.', '')}" if isinstance(v, torch.Tensor) else type(v).__name__ for v in inputs]
    failed = f"{type(model).__name__} itself fails on the example inputs {shapes} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    tensors = [v for v in inputs if isinstance(v, torch.Tensor)]
    integer = [j for j, v in enumerate(inputs) if isinstance(v, torch.Tensor) and not v.is_floating_point() and not v.is_complex() and v.dtype != torch.bool]
    about_types = any(word in str(exc) for word in ("dtype", "type (", "Byte", "Long", "Char", "unsigned char", "Int"))
    if integer and (len(integer) == len(tensors) or about_types):
        return InputTypeError(
            f"{failed}: input(s) {integer} are integer tensors; frames must be floating point in the value range the "
            f"generator was trained on ({SCALING_HINT}). Labels or indices the generator embeds itself are fine: then "
            "check the other inputs."
        )
    one_dict = len(inputs) == 1 and isinstance(inputs[0], Mapping)
    keyword_only = _keyword_only(model) if isinstance(exc, TypeError) and "positional argument" in str(exc) else []
    return InputMismatchError(
        f"{failed}. Give example_inputs it runs on: one frame [B, C, H, W] with the channels its first layer takes, "
        "or a tuple of forward()'s positional arguments, in order"
        + (" (a dict is read as forward()'s first argument; for keyword arguments give a tuple of the arguments "
           "in order, or fix them with concrete_args=)." if one_dict else ".")
        + (f" forward()'s {keyword_only} are keyword-only: to vary one from frame to frame, wrap the generator in a "
           "module whose forward() takes it positionally and passes it on by keyword; to fix one, give "
           "concrete_args={'name': value} (non-tensor values)." if keyword_only else "")
    )


def _keyword_only(model: nn.Module) -> list[str]:
    """The names of ``model.forward``'s keyword-only parameters (none where its signature cannot be read)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def add_module_aliases(captured: Captured, model: nn.Module) -> None:
    """Give a module registered under several names (``named_modules(remove_duplicate=False)``)
    its calls under every one of them: each capture path records one name per module (fx the
    first, export another), and a tap name must not depend on the path."""
    names_of: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if name:
            names_of.setdefault(id(module), []).append(name)
    aliases = {name: names for names in names_of.values() if len(names) > 1 for name in names}
    for qualname in list(captured.module_outputs):
        for alias in aliases.get(qualname, ()):
            captured.module_outputs.setdefault(alias, captured.module_outputs[qualname])


def _capture_one(
    method: str, model: nn.Module, inputs: tuple[Any, ...], options: CaptureOptions, any_batch: bool = False
) -> Captured:
    with _attributes_kept(model):  # (trace keeps them itself, before it builds the graph module)
        captured = trace(model, options, len(inputs)) if method == "fx" else export(model, inputs, options, any_batch=any_batch)
    add_module_aliases(captured, model)
    captured.module_names = frozenset(name for name, _ in model.named_modules(remove_duplicate=False) if name)
    check_against_eager(captured, model, inputs)
    try:
        annotate(captured, inputs)
    except (ShortcutifyError, MemoryError, getattr(torch, "OutOfMemoryError", MemoryError)):
        raise
    except Exception as exc:  # (fx's interpreter and a graph it cannot run node by node: forward(x, **kwargs))
        other = "export" if method == "fx" else "fx"
        raise UntraceableModelError(
            f"the graph that {method} captured from {type(model).__name__} cannot be run node by node to read its shapes "
            f"and MACs ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Try capture={other!r}."
        ) from exc
    return captured


_ABSENT = object()


@contextlib.contextmanager
def _attributes_kept(model: nn.Module) -> Iterator[None]:
    """The plain attributes of ``model``'s modules as they were before, whatever happens inside.

    Capturing runs ``forward`` on proxies (fx) or fake tensors (export): code that stores on its module
    (SwinIR's ``self.mean = self.mean.type_as(x)``) would leave one there, and the model would fail
    on its next call (the next capture path included).
    """
    saved = [(m, dict(vars(m))) for m in model.modules()]
    try:
        yield
    finally:
        for m, before in saved:
            now = vars(m)
            for name in [name for name in now if name not in before]:
                del now[name]
            for name, value in before.items():
                if now.get(name, _ABSENT) is not value:
                    now[name] = value


def unwrap(model: nn.Module) -> nn.Module:
    """The generator inside the wrappers that only run it: ``torch.compile``'s ``OptimizedModule``
    (``_orig_mod``), ``nn.DataParallel`` and ``DistributedDataParallel`` (``module``), nested in any order.

    A captured graph runs the generator's own code on one device whatever wraps it, so the
    shortcut is built (and a saved block attached) on the generator itself: a block saved from
    a wrapped generator loads onto the bare one and the other way round. Compile the result
    with :meth:`~shortcutify.ShortcutV2V.compile`; any other module is returned as it is.
    """
    wrappers: tuple[type, ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # (nothing is compiled unless torch.compile was imported)
    compiled: tuple[type, ...] = (dynamo.OptimizedModule,) if dynamo is not None and hasattr(dynamo, "OptimizedModule") else ()
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif compiled and isinstance(model, compiled):
            model = model._orig_mod
        else:
            return model


def refuse_unusable(model: nn.Module) -> None:
    """Refuse, naming the fix, a generator no capture can work on (each would fail later with torch's own error).

    Raises:
        GeneratorStateError: a TorchScript module, weights on the meta device, uninitialised lazy modules.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise GeneratorStateError(
            f"{type(model).__name__} is a TorchScript module, which neither torch.fx nor torch.export can capture: "
            "wrap the nn.Module it was scripted from (torch.jit.script's input)"
        )
    lazy = [name for name, p in itertools.chain(model.named_parameters(), model.named_buffers()) if nn.parameter.is_lazy(p)]
    if lazy:
        raise GeneratorStateError(
            f"the generator's lazy modules are not initialised ({lazy[:3]} have no shape yet): run it once on a frame "
            "(generator(frame)) before wrapping it"
        )
    meta = [name for name, p in itertools.chain(model.named_parameters(), model.named_buffers()) if p.is_meta]
    if meta:
        raise GeneratorStateError(
            f"the generator's weights are on the meta device, without values ({meta[:3]}): load them first "
            "(generator.to_empty(device=...) then load_state_dict(...), or load_state_dict(..., assign=True))"
        )


def capture(model: nn.Module, example_inputs: Any, options: CaptureOptions = CaptureOptions()) -> Captured:
    """Capture ``model``'s graph, check it against the eager model, annotate it with shapes and MACs.

    With ``options.method == "auto"``: fx first; if it fails or computes something else,
    export; if both fail, the error names both.

    Raises:
        UntraceableModelError: the graph could not be captured; the message names the path,
            the failing line of the model and the remedies.
        CaptureMismatchError: the captured graph computes something other than the model.
        GeneratorStateError: see :func:`refuse_unusable`.
    """
    refuse_unusable(model)
    inputs = as_tuple(example_inputs)
    leaves = tree_flatten(list(inputs))[0]
    for i, x in enumerate(leaves):
        if isinstance(x, torch.Tensor):
            refuse_valueless(x, f"example input tensor {i}")
    empty = [list(x.shape) for x in leaves if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 0]
    if empty:
        raise ValueError(
            f"example_inputs hold an empty batch (shape {empty[0]}): shapes, MACs and the capture check need at least "
            "one frame; give example frames [B, C, H, W] with B >= 1"
        )
    given = [f"example input {i}" for i, x in enumerate(inputs) if any(isinstance(v, torch.Generator) for v in tree_flatten(x)[0])]
    given += [f"concrete_args[{k!r}]" for k, v in options.concrete_args.items() if any(isinstance(u, torch.Generator) for u in tree_flatten(v)[0])]
    if given:
        raise UntraceableModelError(
            f"{', '.join(given)} is a torch.Generator: a captured graph can hold no generator that goes on from call to "
            "call as the caller's does (fx would keep the one object it met while tracing; export a copy made while "
            "capturing). "
            f"Leave the argument at None if the model then draws from torch's global generator, or: {_OWN_GENERATOR_REMEDY}"
        )
    _refuse_unknown_names(model, options)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers() if not nn.parameter.is_lazy(b)}
    try:
        captured = _capture_paths(model, inputs, options)
    except UntraceableModelError as exc:
        _refuse_changed_buffers(model, buffers, exc)
        raise
    except BaseException:
        _restore_buffers(model, buffers)
        raise
    _refuse_changed_buffers(model, buffers, None)
    return captured


def _capture_paths(model: nn.Module, inputs: tuple[Any, ...], options: CaptureOptions) -> Captured:
    try:
        if options.method != "auto":
            return _capture_one(options.method, model, inputs, options)
        try:
            return _capture_one("fx", model, inputs, options)
        except UntraceableModelError as fx_error:
            try:
                return _capture_one("export", model, inputs, options)
            except UntraceableModelError as export_error:
                raise type(export_error)(
                    f"neither capture path works for {type(model).__name__}.\n[fx] {fx_error}\n[export] {export_error}"
                ) from export_error
    except UntraceableModelError as exc:
        scripted: list[str] = []
        for name, m in model.named_modules():
            if name and isinstance(m, torch.jit.ScriptModule) and not any(name.startswith(s + ".") for s in scripted):
                scripted.append(name)  # (the outermost ones)
        if not scripted:
            raise
        raise type(exc)(
            f"{exc}\n{type(model).__name__} holds TorchScript submodules {scripted[:6]}: neither path traces into "
            "TorchScript (nor can fvcore count them); build the generator from their eager modules (script it after "
            "wrapping, if at all)."
        ) from exc


def _refuse_unknown_names(model: nn.Module, options: CaptureOptions) -> None:
    """Refuse ``leaf_modules`` names that name no module of ``model`` and ``concrete_args`` that name no argument of
    its ``forward`` (a misspelling would otherwise be ignored, or blamed on the example inputs).

    Raises:
        ValueError: naming the unknown names and the close ones.
    """
    modules = {name for name, _ in model.named_modules() if name}
    unknown = [m for m in options.leaf_modules if isinstance(m, str) and m not in modules]
    if unknown:
        close = sorted({c for m in unknown for c in difflib.get_close_matches(m, modules, n=3)})
        raise ValueError(
            f"leaf_modules names {unknown}, which name no module of {type(model).__name__}"
            + (f" (close: {close})" if close else "") + ": give qualified module names (as list_taps() shows them) or classes"
        )
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    extra = [k for k in options.concrete_args if k not in params]
    if extra:
        raise ValueError(
            f"concrete_args names {extra}, which are not arguments of {type(model).__name__}.forward {list(params)}: "
            "concrete_args fixes forward()'s own non-tensor arguments by name"
        )


def _restore_buffers(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Give the buffers of ``model`` that differ from ``before`` their values back; their names."""
    changed = []
    for name, b in model.named_buffers():
        old = before.get(name)
        if old is None or old.shape != b.shape or old.dtype != b.dtype or nn.parameter.is_lazy(b):
            continue
        if not bool((b.eq(old) | (b.ne(b) & old.ne(old))).all()):  # (NaN where NaN was counts as the same)
            changed.append(name)
            with torch.no_grad():
                b.copy_(old)
    return changed


def _refuse_changed_buffers(model: nn.Module, before: dict[str, torch.Tensor], cause: Exception | None) -> None:
    """Restore the buffers that running ``model`` changed, and refuse it if any did.

    Raises:
        UntraceableModelError: ``forward`` changes buffers (a running statistic, a call counter).
    """
    changed = _restore_buffers(model, before)
    if changed:
        raise UntraceableModelError(
            f"forward() of {type(model).__name__} changes its buffers {changed} when it runs (a running statistic, a "
            "call counter, a cache): the captured programs, and the checks that compare them with the model, would each change "
            "them again, so neither keyframes nor shortcut frames could compute what the model does. The buffers are "
            "restored. Make that state an input and an output of forward(), or keep it fixed at inference (e.g. the "
            "layers that update it in eval mode)."
        ) from cause


def recapture(
    captured: Captured, model: nn.Module, example_inputs: Any, options: CaptureOptions, *, any_batch: bool = False
) -> Captured:
    """Capture ``model`` again, by the path that made ``captured``, for other example inputs
    (export: with a symbolic batch size where ``any_batch`` and the model allow it, see :func:`export`)."""
    return _capture_one(
        captured.method, model, as_tuple(example_inputs), replace(options, method=captured.method), any_batch=any_batch
    )
