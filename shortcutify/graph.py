"""Splitting a generator into a keyframe program and a shortcut program with ``torch.fx``.

A *tap* names one value inside the generator: either an fx node name (as printed by
:func:`list_taps`) or a module qualified name (``"model.4"``), meaning the output of
that module's call, as in ``torchvision.models.feature_extraction``.

Given an encoder tap ``e`` and a decoder tap ``d`` and the traced graph ``G``:

* the **keyframe program** is ``G`` with the values of ``e`` and ``d`` as extra outputs:
  ``keyframe(*inputs) -> (output, a, f)``; its ``output`` is the teacher's output exactly;
* the **shortcut program** is ``G`` with a call of the shortcut block inserted right after
  ``e``, every use of ``d`` replaced by the block's prediction, and dead code removed:
  ``shortcut(*inputs, shortcut_reference=ref) -> (output, f_hat, aux)``. Whatever the
  tail still needs (skip connections, extra inputs, side branches) stays and is computed
  exactly; whatever was needed only for ``d`` is gone.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import linecache
import operator
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from .errors import (
    AmbiguousTapError,
    EmptyCutError,
    TapOrderError,
    TapShapeError,
    UnknownTapError,
    UntraceableModelError,
)

__all__ = ["TapInfo", "TapList", "Traced", "Programs", "trace", "list_taps", "build_programs"]

BLOCK_NAME = "shortcut_block"
REFERENCE_INPUT = "shortcut_reference"


@dataclass(frozen=True)
class TapInfo:
    """One candidate tap: a tensor-valued node of the traced generator.

    Attributes:
        name: the fx node name (always accepted as a tap name).
        modules: module qualified names whose (single) call returns this value; each is
            accepted as a tap name too.
        op: what computes it, e.g. ``"Conv2d"``, ``"add"``, ``"relu"``.
        shape: the value's shape on the example input, e.g. ``(1, 128, 128, 128)``.
        macs: multiply-adds needed to compute this value from the model inputs (the
            node and all its ancestors, counted by fvcore on the example input).
    """

    name: str
    modules: tuple[str, ...]
    op: str
    shape: tuple[int, ...]
    macs: int

    @property
    def is_4d(self) -> bool:
        """Whether the value is a ``[B, C, H, W]`` feature map (required for a tap)."""
        return len(self.shape) == 4


class TapList(list):
    """A list of :class:`TapInfo` that prints as a table."""

    def __str__(self) -> str:
        rows = [("node", "module", "op", "shape", "MACs up to it")]
        for t in self:
            rows.append((t.name, ", ".join(t.modules) or "-", t.op, "x".join(map(str, t.shape)), f"{t.macs:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


@dataclass
class Traced:
    """A traced generator: its fx graph plus, per module qualified name, its output nodes."""

    gm: fx.GraphModule
    module_outputs: dict[str, list[fx.Node]]
    macs: dict[str, int] = field(default_factory=dict)

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
        self.module_outputs: dict[str, list[fx.Node]] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        qualname = self.path_of_module(m)
        if isinstance(out, fx.Proxy):
            self.module_outputs.setdefault(qualname, []).append(out.node)
        else:  # tuple/dict output or a constant: not a single tap
            self.module_outputs.setdefault(qualname, []).append(None)  # type: ignore[arg-type]
        return out


_MACHINERY = tuple(f"/shortcutify/{name}.py" for name in ("graph", "module", "io", "cost"))


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame that is not inside torch or shortcutify's tracing machinery."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        f = fr.filename.replace("\\", "/")
        if "/torch/" not in f and not f.endswith(_MACHINERY) and not f.startswith("<"):
            code = (fr.line or linecache.getline(fr.filename, fr.lineno or 0)).strip()
            return f'File "{fr.filename}", line {fr.lineno}, in {fr.name}: {code}'
    return "(no frame of your code found in the traceback)"


def trace(
    model: nn.Module,
    *,
    leaf_modules: Sequence[type | str] = (),
    tracer_kwargs: dict[str, Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> Traced:
    """Symbolically trace ``model`` with ``torch.fx``.

    Args:
        model: the generator.
        leaf_modules: module types or qualified names to keep as opaque calls (use this
            for submodules with data-dependent control flow).
        tracer_kwargs: passed to :class:`torch.fx.Tracer` (e.g. ``autowrap_functions``).
        concrete_args: passed to :meth:`torch.fx.Tracer.trace` to fix non-tensor arguments.

    Raises:
        UntraceableModelError: naming the line of the model that failed and the remedies.
    """
    tracer = _TapTracer(leaf_modules, **(tracer_kwargs or {}))
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
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
    if concrete_args:  # fixed arguments default to their fixed value (callers may leave them out)
        names = list(inspect.signature(model.forward).parameters)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        for name, n in zip(names, placeholders):
            if name in concrete_args:
                n.args = (concrete_args[name],)
                if n.target != name:  # fx renames it (flag -> flag_1); keep the keyword callers use
                    n.target = name
                    n._rename(name)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    return Traced(gm=gm, module_outputs=tracer.module_outputs)


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}()"
    return node.op


def as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def annotate(traced: Traced, example_inputs: Any) -> None:
    """Run the traced graph once on ``example_inputs``; store each node's shape and MACs.

    Shapes go to ``node.meta["tensor_meta"]`` (as :class:`torch.fx.passes.shape_prop.ShapeProp`
    does) and per-node MACs (fvcore, one multiply-add = one) to ``traced.macs``.
    """
    from .cost import call_macs  # local import: cost imports graph

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
        _Annotator(traced.gm).run(*inputs)
    traced.macs = macs


class _MethodCall:
    """``fn(self_, *args)`` calling the method ``name`` of its first argument."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, self.name)(*args, **kwargs)


def ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node it depends on."""
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def _tap_infos(traced: Traced) -> TapList:
    modules_of: dict[fx.Node, list[str]] = {}
    for qualname, outs in traced.module_outputs.items():
        if len(outs) == 1 and outs[0] is not None and qualname:
            modules_of.setdefault(outs[0], []).append(qualname)
    taps = TapList()
    for n in traced.gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        if n.op in ("placeholder", "output", "get_attr") or meta is None:
            continue
        macs = sum(traced.macs.get(a.name, 0) for a in ancestors(n))
        taps.append(TapInfo(n.name, tuple(sorted(modules_of.get(n, []))), _describe(traced.gm, n), meta[0], macs))
    return taps


def list_taps(
    model: nn.Module,
    example_inputs: Any,
    *,
    leaf_modules: Sequence[type | str] = (),
    tracer_kwargs: dict[str, Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> TapList:
    """Every tensor-valued node of ``model``, in execution order, as candidate taps.

    Args:
        model: the generator.
        example_inputs: a tensor ``[B, C, H, W]`` or a tuple of ``forward``'s positional
            arguments; used to record shapes and MACs.

    Returns:
        A :class:`TapList` of :class:`TapInfo` (name, module names, op, shape, MACs up to
        it); ``print()`` it for a table. Taps must be 4-D (``TapInfo.is_4d``).
    """
    traced = trace(model, leaf_modules=leaf_modules, tracer_kwargs=tracer_kwargs, concrete_args=concrete_args)
    annotate(traced, example_inputs)
    return _tap_infos(traced)


def resolve_tap(traced: Traced, name: str, role: str) -> fx.Node:
    """The node a tap name denotes (node name first, then module qualified name)."""
    if not isinstance(name, str):
        raise TypeError(f"{role} must be a str (an fx node name or a module qualified name), got {type(name).__name__}")
    outs = traced.module_outputs.get(name)
    if outs and len(outs) > 1:  # checked first: a node may carry the same name as the module's first call
        names = [o.name for o in outs if o is not None]
        raise AmbiguousTapError(
            f"{role} {name!r}: module {name!r} is called {len(outs)} times in forward(); "
            f"name one call by its node name instead: {names}"
        )
    node = traced.node(name)
    if node is not None and node.op != "output":
        return node
    if outs:
        if outs[0] is None:
            raise TapShapeError(f"{role} {name!r}: module {name!r} does not return a single tensor")
        return outs[0]
    candidates = [n.name for n in traced.gm.graph.nodes if n.op not in ("output",)]
    candidates += [q for q in traced.module_outputs if q]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Closest names: {close}." if close else ""
    raise UnknownTapError(
        f"{role} {name!r} is neither a node name nor a module qualified name of "
        f"{type(traced.gm).__name__}.{hint} Call shortcutify.list_taps(model, example_inputs) to see them all."
    )


def _check_4d(node: fx.Node, role: str, name: str) -> tuple[int, int, int, int]:
    meta = node.meta.get("tensor_meta")
    if meta is None:
        raise TapShapeError(f"{role} {name!r} (node {node.name!r}) is not a tensor on the example input")
    shape = meta[0]
    if len(shape) != 4:
        raise TapShapeError(
            f"{role} {name!r} (node {node.name!r}) has shape {tuple(shape)}; a tap must be a 4-D "
            "feature map [B, C, H, W]. Pick another tap from list_taps() (column 'shape')."
        )
    return tuple(shape)  # type: ignore[return-value]


@dataclass
class Programs:
    """The two programs a :class:`~shortcutify.ShortcutV2V` runs, plus facts about the cut."""

    keyframe: fx.GraphModule
    shortcut: fx.GraphModule  # returns (output, f_hat, aligned)
    inference: fx.GraphModule  # the shortcut program returning the output alone
    enc: TapInfo
    dec: TapInfo
    skipped: tuple[str, ...]  # node names of the teacher that shortcut frames do not run
    skipped_macs: int
    signature: list[str]


# ops that may return a view of (or the very tensor of) an argument
_VIEW_OPS = frozenset(
    "view view_as reshape reshape_as permute transpose t flatten unflatten squeeze unsqueeze narrow select "
    "expand expand_as contiguous chunk split tensor_split unbind movedim moveaxis swapaxes swapdims diagonal "
    "as_strided detach __getitem__ getitem getattr unfold real imag view_as_real view_as_complex "
    "to type type_as float double half bfloat16 cpu cuda identity "
    "dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout".split()
)
# torch.nn layers that may return their input itself (or a view of it)
_ALIASING_MODULES = frozenset(
    "Identity Dropout Dropout1d Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout Flatten Unflatten".split()
)
_INPLACE_OPERATORS = frozenset(
    getattr(operator, n) for n in "iadd isub imul itruediv ifloordiv imod ipow iand ior ixor ilshift irshift imatmul setitem".split()
)


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", "")


def _effect(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """What ``node`` may do to its tensor arguments: ``"write"``, ``"alias"`` (return one of
    them or a view) or ``"pure"``. Conservative: anything not known to be pure or an alias
    counts as writing."""
    if node.op == "output":
        return "pure"
    if node.op == "call_module":
        mod = modules.get(str(node.target))
        if mod is None or not type(mod).__module__.startswith("torch.nn.modules") or bool(getattr(mod, "inplace", False)):
            return "write"  # a user's leaf module, or a container, is opaque
        if isinstance(mod, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return "write"
        return "alias" if type(mod).__name__ in _ALIASING_MODULES else "pure"
    if node.op not in ("call_function", "call_method"):
        return "write"
    if node.target in _INPLACE_OPERATORS or "out" in node.kwargs or node.kwargs.get("inplace"):
        return "write"
    name = _target_name(node)
    if name.endswith("_") and not name.endswith("__"):
        return "write"
    if node.op == "call_function" and callable(node.target):
        try:
            signature = inspect.signature(node.target)
        except (TypeError, ValueError):  # a builtin: torch's and operator's write only as checked above
            module = getattr(node.target, "__module__", None) or ""
            known = node.target is getattr or module.startswith("torch") or module in ("_operator", "operator")
            return ("alias" if name in _VIEW_OPS else "pure") if known else "write"
        if "inplace" in signature.parameters:
            try:
                if signature.bind(*node.args, **node.kwargs).arguments.get("inplace", False):
                    return "write"
            except TypeError:
                return "write"
        module = getattr(node.target, "__module__", None) or ""
        if not (module.startswith("torch") or module in ("_operator", "operator")):
            return "write"  # a user's wrapped function is opaque
    return "alias" if name in _VIEW_OPS else "pure"


def _uses(user: fx.Node, node: fx.Node) -> bool:
    found: list[bool] = []
    fx.node.map_arg((user.args, user.kwargs), lambda n: found.append(n is node))
    return any(found)


def _may_be_mutated(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether an op may change the value of ``node`` in place, through any alias (conservative).

    A tap that is itself an alias of an earlier value counts as mutable: a write into that
    value would be a write into the tap.
    """
    if _effect(node, modules) == "alias":
        return True
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        for user in n.users:
            if user in seen or not _uses(user, n):
                continue
            seen.add(user)
            effect = _effect(user, modules)
            if effect == "write":
                return True
            if effect == "alias":
                stack.append(user)
    return False


def _keeps_writes(graph: fx.Graph, modules: dict[str, nn.Module]) -> Callable[[fx.Node], bool]:
    """``is_impure_node`` for dead-code elimination: also keep an unused op that may write into
    a value (or an alias of one) that a later op still reads, e.g. ``f.view(..).clamp_(min=0)``."""
    order = {n: i for i, n in enumerate(graph.nodes)}

    def impure(node: fx.Node) -> bool:
        if node.is_impure():
            return True
        if node.op not in ("call_function", "call_method", "call_module") or _effect(node, modules) != "write":
            return False
        targets, stack = set(), list(node.all_input_nodes)
        while stack:  # what the op may write into: its inputs and whatever they alias
            n = stack.pop()
            if n not in targets:
                targets.add(n)
                if _effect(n, modules) == "alias":
                    stack.extend(n.all_input_nodes)
        return any(order.get(u, -1) > order[node] for t in targets for u in t.users if u is not node)

    return impure


def _root_dict(gm: fx.GraphModule, graph: fx.Graph) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for n in graph.nodes:
        if n.op in ("call_module", "get_attr") and n.target != BLOCK_NAME:
            obj: Any = gm
            for part in n.target.split("."):
                obj = getattr(obj, part)
            root[n.target] = obj
    return root


def graph_signature(traced: Traced, enc: fx.Node, dec: fx.Node) -> list[str]:
    """One line per node of the teacher graph: its op, what it computes and its inputs.

    Marks the taps and includes module hyper-parameters (their ``repr``), not weights;
    two generators with equal signatures can share a shortcut block.
    """
    index = {n: i for i, n in enumerate(traced.gm.graph.nodes)}
    lines = []
    for n in traced.gm.graph.nodes:
        what = repr(traced.gm.get_submodule(n.target)) if n.op == "call_module" else _describe(traced.gm, n)
        what = " ".join(what.split())
        tap = " <enc>" if n is enc else " <dec>" if n is dec else ""
        lines.append(f"{n.name}: {n.op} {what} <- {[index[a] for a in n.all_input_nodes]}{tap}")
    return lines


def graph_fingerprint(signature: list[str]) -> str:
    """A short hash of :func:`graph_signature`."""
    return hashlib.sha256("\n".join(signature).encode()).hexdigest()[:16]


def build_programs(traced: Traced, enc_layer: str, dec_layer: str, block: nn.Module) -> Programs:
    """Validate the taps and build the keyframe and shortcut programs.

    ``traced`` must have been :func:`annotate`-d. ``block`` is called in the shortcut
    program as ``block(a, shortcut_reference) -> (f_hat, aux)``.
    """
    enc = resolve_tap(traced, enc_layer, "enc_layer")
    dec = resolve_tap(traced, dec_layer, "dec_layer")
    for node, role, name in ((enc, "enc_layer", enc_layer), (dec, "dec_layer", dec_layer)):
        if node.op in ("placeholder", "get_attr"):
            raise TapOrderError(
                f"{role} {name!r} is {'an input' if node.op == 'placeholder' else 'a constant'} of the model; "
                "taps must be values the model computes. Pick one from list_taps()."
            )
    if enc is dec:
        raise TapOrderError(f"enc_layer {enc_layer!r} and dec_layer {dec_layer!r} are the same value ({enc.name!r})")
    _check_4d(enc, "enc_layer", enc_layer)
    _check_4d(dec, "dec_layer", dec_layer)
    order = {n: i for i, n in enumerate(traced.gm.graph.nodes)}
    if order[enc] > order[dec]:
        raise TapOrderError(
            f"enc_layer {enc_layer!r} (node {enc.name!r}) runs after dec_layer {dec_layer!r} (node {dec.name!r}); "
            "the encoder tap must come first. Did you swap them?"
        )
    if enc not in ancestors(dec):
        raise TapOrderError(
            f"dec_layer {dec_layer!r} (node {dec.name!r}) does not depend on enc_layer {enc_layer!r} "
            f"(node {enc.name!r}): they lie on parallel branches. Choose a decoder tap downstream of the encoder tap."
        )
    output_node = next(n for n in traced.gm.graph.nodes if n.op == "output")
    if dec not in ancestors(output_node):
        raise TapOrderError(f"dec_layer {dec_layer!r} (node {dec.name!r}) does not reach the model's output")

    # keyframe program: the original graph with a and f as extra outputs
    kgraph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out_val = kgraph.graph_copy(traced.gm.graph, env)
    # a tap value that a later in-place op may change (ReLU(inplace=True) after a norm)
    # leaves the program as a copy taken right where it is computed; others as they are
    modules = dict(traced.gm.named_modules())
    mutated = {n: _may_be_mutated(n, modules) for n in (enc, dec)}
    taps_out = []
    for orig in (enc, dec):
        node = env[orig]
        if mutated[orig]:
            with kgraph.inserting_after(node):
                node = kgraph.call_method("clone", (node,))
        taps_out.append(node)
    kgraph.output((out_val, *taps_out))
    keyframe = fx.GraphModule(_root_dict(traced.gm, kgraph), kgraph, "KeyframeProgram")

    # shortcut program: d replaced by the block's prediction, dead code removed
    sgraph = fx.Graph()
    senv: dict[fx.Node, fx.Node] = {}
    s_out = sgraph.graph_copy(traced.gm.graph, senv)
    placeholders = [n for n in sgraph.nodes if n.op == "placeholder"]
    with sgraph.inserting_after(placeholders[-1]):
        ref = sgraph.placeholder(REFERENCE_INPUT, default_value=None)
    with sgraph.inserting_after(senv[enc]):
        blk = sgraph.call_module(BLOCK_NAME, (senv[enc], ref))
    with sgraph.inserting_after(blk):
        f_hat = sgraph.call_function(operator.getitem, (blk, 0))
    with sgraph.inserting_after(f_hat):
        aux = sgraph.call_function(operator.getitem, (blk, 1))
    senv[dec].replace_all_uses_with(f_hat)
    f_hat_out = f_hat
    if mutated[dec]:  # returned for the losses: kept safe from in-place ops of the tail
        with sgraph.inserting_after(aux):
            f_hat_out = sgraph.call_method("clone", (f_hat,))
    sgraph.output((s_out, f_hat_out, aux))
    root = _root_dict(traced.gm, sgraph)
    root[BLOCK_NAME] = block
    shortcut = fx.GraphModule(root, sgraph, "ShortcutProgram")
    shortcut.graph.eliminate_dead_code(is_impure_node=_keeps_writes(shortcut.graph, dict(shortcut.named_modules())))
    shortcut.delete_all_unused_submodules()
    shortcut.recompile()
    alive = set(shortcut.graph.nodes)
    skipped = tuple(n.name for n in traced.gm.graph.nodes if n in senv and senv[n] not in alive)
    skipped_macs = sum(traced.macs.get(name, 0) for name in skipped)
    if skipped_macs == 0:
        raise EmptyCutError(
            f"the cut between enc_layer {enc_layer!r} and dec_layer {dec_layer!r} skips no multiply-adds "
            f"(skipped nodes: {list(skipped)}); a shortcut block would only add cost. Choose taps further apart: "
            "list_taps() shows the MACs up to each node."
        )

    # what a shortcut frame runs at inference: the output alone, so that f_hat is freed as
    # soon as the tail has read it (the training program keeps it for the losses)
    igraph = fx.Graph()
    ienv: dict[fx.Node, fx.Node] = {}
    i_out = igraph.graph_copy(shortcut.graph, ienv)
    igraph.output(i_out[0])
    inference = fx.GraphModule(shortcut, igraph, "ShortcutInferenceProgram")
    inference.graph.eliminate_dead_code(is_impure_node=_keeps_writes(inference.graph, dict(inference.named_modules())))
    inference.recompile()

    taps = {t.name: t for t in _tap_infos(traced)}
    return Programs(
        keyframe=keyframe,
        shortcut=shortcut,
        inference=inference,
        enc=taps[enc.name],
        dec=taps[dec.name],
        skipped=skipped,
        skipped_macs=skipped_macs,
        signature=graph_signature(traced, enc, dec),
    )
