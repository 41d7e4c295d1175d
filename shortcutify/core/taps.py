"""Taps: named values inside a captured generator, listed and resolved.

A *tap* names one value: either an fx node name (as printed by :func:`list_taps`) or a
module qualified name (``"model.4"``), meaning the output of that module's call, as in
``torchvision.models.feature_extraction``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn
from typing_extensions import Unpack

from ..errors import AmbiguousTapError, TapShapeError, UnknownTapError
from .caller import warn_caller
from .capture import CaptureKwargs, CaptureOptions, Captured, as_tuple, capture, unwrap

__all__ = ["TapInfo", "TapList", "list_taps", "tap_info", "tap_infos", "macs_up_to", "resolve_tap", "ancestors", "describe"]


@dataclass(frozen=True)
class TapInfo:
    """One candidate tap: a tensor-valued node of the captured generator.

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


class TableList(list):
    """A list that prints as a table (``str`` and ``repr``, so a REPL shows the table) and stays one when sliced."""

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        return type(self)(item) if isinstance(index, slice) else item

    def __repr__(self) -> str:
        return str(self)


class TapList(TableList):
    """A list of :class:`TapInfo` that prints as a table."""

    def __str__(self) -> str:
        rows = [("node", "module", "op", "shape", "MACs up to it")]
        for t in self:
            rows.append((t.name, ", ".join(t.modules) or "-", t.op, "x".join(map(str, t.shape)) or "()", f"{t.macs:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """What computes ``node``: a module type, a function name or ``.method()``."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return f".{node.target}()"
    return node.op


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


_DEPTH_TO_SPACE = {torch.nn.functional.pixel_shuffle, torch.pixel_shuffle, torch.ops.aten.pixel_shuffle.default}


def feeds_depth_to_space(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether every use of ``node`` is a pixel shuffle (depth to space): its channels hold the sub-pixel phases
    of a finer map (a super-resolution tail's conv before ``PixelShuffle``), which a block would warp as separate
    features at the coarse resolution; the shuffle's output holds the same values laid out on the fine grid."""
    def shuffles(user: fx.Node) -> bool:
        if user.op == "call_module":
            return isinstance(modules.get(str(user.target)), nn.PixelShuffle)
        return (user.op == "call_function" and user.target in _DEPTH_TO_SPACE) or (user.op == "call_method" and user.target == "pixel_shuffle")

    return bool(node.users) and all(shuffles(u) for u in node.users)


def macs_up_to(captured: Captured) -> dict[fx.Node, int]:
    """Per node of an annotated :class:`Captured`: the MACs of the node and all its ancestors (:func:`ancestors`),
    each counted once however many paths lead to it.

    In one pass over the graph (nodes come in execution order): each node's ancestors that cost MACs are a bit
    mask, the union of its inputs' masks, summed a byte at a time from tables of the 256 sums of each byte, so
    that a graph of thousands of nodes does not cost a walk over the ancestors of each one."""
    nodes = list(captured.gm.graph.nodes)
    costly = [n for n in nodes if captured.macs.get(n.name, 0)]
    bit = {n: 1 << k for k, n in enumerate(costly)}
    tables = []  # tables[j][v]: the MACs of the costly nodes whose bits are set in value v of byte j
    for start in range(0, len(costly), 8):
        weights = [captured.macs[n.name] for n in costly[start : start + 8]]
        table = [0] * 256
        for v in range(1, 1 << len(weights)):
            low = v & -v
            table[v] = table[v ^ low] + weights[low.bit_length() - 1]
        tables.append(table)
    masks: dict[fx.Node, int] = {}
    totals: dict[fx.Node, int] = {}
    for n in nodes:
        mask = bit.get(n, 0)
        for a in n.all_input_nodes:
            mask |= masks[a]
        masks[n] = mask
        totals[n] = sum(table[byte] for table, byte in zip(tables, mask.to_bytes(len(tables), "little")))
    return totals


def tap_info(captured: Captured, node: fx.Node) -> TapInfo:
    """The :class:`TapInfo` of one tensor-valued node of an annotated :class:`Captured` (as :func:`tap_infos` lists it,
    without counting the MACs up to every other node)."""
    modules = tuple(sorted(q for q, outs in captured.module_outputs.items() if q and len(outs) == 1 and outs[0] is node))
    macs = sum(captured.macs.get(a.name, 0) for a in ancestors(node))
    return TapInfo(node.name, modules, describe(captured.gm, node), node.meta["tensor_meta"][0], macs)


def tap_infos(captured: Captured) -> TapList:
    """Every tensor-valued computed node of an annotated :class:`Captured`, in execution order."""
    modules_of: dict[fx.Node, list[str]] = {}
    for qualname, outs in captured.module_outputs.items():
        if len(outs) == 1 and outs[0] is not None and qualname:
            modules_of.setdefault(outs[0], []).append(qualname)
    up_to = macs_up_to(captured)
    taps = TapList()
    for n in captured.gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        if n.op in ("placeholder", "output", "get_attr") or meta is None:
            continue
        taps.append(TapInfo(n.name, tuple(sorted(modules_of.get(n, []))), describe(captured.gm, n), meta[0], up_to[n]))
    return taps


def list_taps(model: nn.Module, example_inputs: Any, **capture_options: Unpack[CaptureKwargs]) -> TapList:
    """Every tensor-valued node of ``model``, in execution order, as candidate taps.

    Args:
        model: the generator.
        example_inputs: a tensor ``[B, C, H, W]`` or a tuple of ``forward``'s positional
            arguments; used to record shapes and MACs.
        capture_options: capture options (``capture``, ``leaf_modules``, ``tracer_kwargs``, ``concrete_args``;
            see :class:`~shortcutify.core.capture.CaptureOptions`).

    Returns:
        A :class:`TapList` of :class:`TapInfo` (name, module names, op, shape, MACs up to
        it); ``print()`` it for a table. Taps must be 4-D (``TapInfo.is_4d``). The model runs in
        eval mode, as :func:`~shortcutify.shortcutify` runs it (a model in training mode would update
        its normalisation statistics); its modes are given back.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        taps = tap_infos(capture(unwrap(model), example_inputs, CaptureOptions.from_kwargs(**capture_options)))
    finally:
        for m, mode in modes:
            m.training = mode
    unbatched = [list(v.shape) for v in as_tuple(example_inputs) if isinstance(v, Tensor) and v.dim() == 3]
    if unbatched and not any(t.is_4d for t in taps):
        warn_caller(
            f"list_taps(): no value of the generator is 4-D, so none can be a tap, and example input(s) {unbatched} "
            "look like frames without their batch dimension: give frame.unsqueeze(0), [1, C, H, W]"
        )
    return taps


#: where wrappers keep the user's generator: ``torch.compile``'s ``OptimizedModule`` (``_orig_mod``),
#: ``nn.DataParallel`` and ``DistributedDataParallel`` (``module``). The shortcut is built on the
#: generator inside (:func:`~shortcutify.core.capture.unwrap`); a tap named with the wrapper's
#: prefix is found without it (:func:`resolve_tap`).
WRAPPER_PREFIXES = ("module._orig_mod.", "_orig_mod.module.", "_orig_mod.", "module.")


def resolve_tap(captured: Captured, name: str, role: str) -> fx.Node:
    """The node a tap name denotes (node name first, then module qualified name, then a module
    qualified name given with a wrapper's prefix of :data:`WRAPPER_PREFIXES`, without it).

    Raises:
        UnknownTapError, AmbiguousTapError, TapShapeError: with what to do instead.
    """
    if not isinstance(name, str):
        raise TypeError(f"{role} must be a str (an fx node name or a module qualified name), got {type(name).__name__}")
    outs = captured.module_outputs.get(name)
    if outs and len(outs) > 1:  # checked first: a node may carry the same name as the module's first call
        names = [o.name for o in outs if o is not None]
        raise AmbiguousTapError(
            f"{role} {name!r}: module {name!r} is called {len(outs)} times in forward(); "
            f"name one call by its node name instead: {names}"
        )
    node = captured.node(name)
    if node is not None and node.op != "output":
        return node
    if outs:
        if outs[0] is None:
            raise TapShapeError(
                f"{role} {name!r}: module {name!r} does not return a single tensor (a tuple or a dict); name a node that "
                "holds one of its tensors, or a module inside it: list_taps(model, example_inputs) lists them"
            )
        return outs[0]
    bare = next((name[len(p) :] for p in WRAPPER_PREFIXES if name.startswith(p) and name[len(p) :] in captured.module_outputs), None)
    if bare:
        return resolve_tap(captured, bare, role)
    if name in captured.module_names:
        inside = [q for q in captured.module_outputs if q.startswith(name + ".")][:6]
        hidden = (
            ", or export records it inside one higher-order op (code under torch.enable_grad() or torch.autocast in "
            "forward), whose modules the graph does not name (capture='fx' names them)"
            if captured.method == "export" else ""
        )
        raise UnknownTapError(
            f"{role} {name!r} is a module of the generator, but the graph holds no call of it: it is never called "
            "whole (only its children, or slices of it such as a Sequential's [:2]), or not on the example inputs "
            f"(a branch not taken, a loop that stops early){hidden}. "
            + (f"Tap a module inside it ({inside}) or a node list_taps() lists." if inside else "Tap a node list_taps() lists.")
        )
    candidates = [n.name for n in captured.gm.graph.nodes if n.op.startswith("call_")]  # (not inputs nor weights)
    candidates = list(dict.fromkeys(candidates + [q for q in captured.module_outputs if q]))  # (a node may bear its module's name)
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Closest names: {close}." if close else ""
    raise UnknownTapError(
        f"{role} {name!r} is neither a node name nor a module qualified name of "
        f"{type(captured.gm).__name__}.{hint} Call shortcutify.list_taps(model, example_inputs) to see them all."
    )
