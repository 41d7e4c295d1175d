"""What an fx node may do to its tensor arguments: write into them, alias them, or neither.

Used to decide which tap values must be copied (a later in-place op would change them) and
which unused in-place ops dead-code elimination must keep. Decided by an allow-list:
``torch.nn`` layers without ``inplace`` and torch/operator functions are pure; views,
casts, ``Identity``/``Dropout``/``Flatten`` are followed as aliases; ``*_`` methods,
``inplace=``/``out=``, containers, a user's leaf modules and wrapped functions count as
writers.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable

import torch
from torch import fx, nn

__all__ = ["effect", "may_be_mutated", "keeps_writes"]


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


def _read_signature(target: Callable[..., object]) -> inspect.Signature | None:
    """``inspect.signature(target)``, ``None`` where it has none (a builtin)."""
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


#: cached: reading a builtin's signature parses its text, and a graph calls the same few functions many times
_cached_signature = functools.lru_cache(maxsize=4096)(_read_signature)


def _signature(target: Callable[..., object]) -> inspect.Signature | None:
    try:
        return _cached_signature(target)
    except TypeError:  # (an unhashable callable: read, not cached)
        return _read_signature(target)


def effect(node: fx.Node, modules: dict[str, nn.Module]) -> str:
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
    if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):  # an ATen op (export): its schema says
        if _written_arguments(node):
            return "write"
        aliasing = any(r.alias_info is not None for r in node.target._schema.returns)
        # e.g. aten.dropout returns its very input in eval mode, though its schema declares no alias
        maybe = getattr(torch.Tag, "maybe_aliasing_or_mutating", None)  # (older torch has no such tag)
        aliasing = aliasing or (maybe is not None and maybe in node.target.tags)
        return "alias" if aliasing else "pure"
    if node.target in _INPLACE_OPERATORS or "out" in node.kwargs or node.kwargs.get("inplace"):
        return "write"
    name = _target_name(node)
    if name.endswith("_") and not name.endswith("__"):
        return "write"
    if node.op == "call_function" and callable(node.target):
        signature = _signature(node.target)
        if signature is None:  # a builtin: torch's and operator's write only as checked above
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


def _written_arguments(node: fx.Node) -> list[fx.Node]:
    """The nodes an ATen op's schema says it writes into (``Tensor(a!)`` arguments)."""
    written: list[fx.Node] = []
    for i, arg in enumerate(node.target._schema.arguments):  # type: ignore[union-attr]
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        fx.node.map_arg(value, lambda n: written.append(n) or n)
    if any(a.alias_info is not None and a.alias_info.is_write for a in node.target._schema.arguments) and not written:  # type: ignore[union-attr]
        written.extend(node.all_input_nodes)  # an out= argument left at its default: be conservative
    return written


def _is_impure(node: fx.Node, random_counts: bool) -> bool:
    try:
        return node.is_impure(impure_random=random_counts)
    except TypeError:  # torch without the impure_random argument: random ops count as impure
        return node.is_impure()


def _uses(user: fx.Node, node: fx.Node) -> bool:
    found: list[bool] = []
    fx.node.map_arg((user.args, user.kwargs), lambda n: found.append(n is node))
    return any(found)


def may_be_mutated(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether an op may change the value of ``node`` in place, through any alias (conservative).

    A tap that is itself an alias of an earlier value counts as mutable: a write into that
    value would be a write into the tap; so does a tap returned by the graph (itself or an
    alias of it): the caller may write into the output it is given.
    """
    if effect(node, modules) == "alias":
        return True
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        for user in n.users:
            if user.op == "output":
                return True
            if user in seen or not _uses(user, n):
                continue
            seen.add(user)
            kind = effect(user, modules)
            if kind == "write":
                return True
            if kind == "alias":
                stack.append(user)
    return False


def keeps_writes(graph: fx.Graph, modules: dict[str, nn.Module]) -> Callable[[fx.Node], bool]:
    """``is_impure_node`` for dead-code elimination: also keep an unused op that may write into
    a value (or an alias of one) that a later op still reads, e.g. ``f.view(..).clamp_(min=0)``.

    An ATen op that writes only into its own arguments (``aten.relu_`` in an exported graph), or
    that draws random numbers (``aten.dropout``), is not kept for that alone, as torch's own rule
    would: it is dead when nobody reads what it computed.
    """
    order = {n: i for i, n in enumerate(graph.nodes)}

    def impure(node: fx.Node) -> bool:
        writes = node.op in ("call_function", "call_method", "call_module") and effect(node, modules) == "write"
        aten = isinstance(node.target, torch._ops.OpOverload)
        if aten:
            # an unused random op (aten.dropout in an exported graph) is dead too
            if not writes and _is_impure(node, random_counts=False):
                return True
        elif node.is_impure():
            return True
        if not writes:
            return False
        # what the op may write into: its written arguments (ATen: as its schema says; otherwise
        # all its inputs) and whatever they alias
        targets, stack = set(), list(_written_arguments(node) if aten else node.all_input_nodes)
        while stack:
            n = stack.pop()
            if n not in targets:
                targets.add(n)
                if effect(n, modules) == "alias":
                    stack.extend(n.all_input_nodes)
        return any(order.get(u, -1) > order[node] for t in targets for u in t.users if u is not node)

    return impure
