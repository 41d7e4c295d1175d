"""The cut: two validated taps and what a shortcut frame skips between them.

Given a :class:`~shortcutify.core.capture.Captured` graph ``G``, an encoder tap ``e`` and a
decoder tap ``d``, :func:`resolve_cut` checks the taps and builds the **shortcut graph**:
``G`` with a call of the shortcut block inserted right after ``e``, every use of ``d``
replaced by the block's prediction (an output that is ``d`` itself, such as the new state of
a recurrent generator, included), and dead code removed::

    shortcut(*inputs, shortcut_reference=ref, shortcut_return_aligned=False) -> (output, f_hat, aligned)

Whatever the tail still needs (skip connections, extra inputs, side branches) stays and is
computed exactly; whatever was needed only for ``d`` is gone (:attr:`Cut.skipped`). The
programs a module runs are built from a :class:`Cut` by
:func:`~shortcutify.core.programs.build_programs`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from torch import fx, nn

from ..errors import EmptyCutError, TapOrderError, TapShapeError
from .capture import Captured
from .effects import keeps_writes, may_be_mutated
from .taps import TapInfo, ancestors, describe, resolve_tap, tap_info

__all__ = ["Cut", "resolve_cut", "graph_signature", "BLOCK_NAME", "REFERENCE_INPUT", "ALIGNED_INPUT", "root_dict"]

BLOCK_NAME = "shortcut_block"
REFERENCE_INPUT = "shortcut_reference"
ALIGNED_INPUT = "shortcut_return_aligned"


@dataclass(frozen=True)
class Cut:
    """Two validated taps of a captured generator and the shortcut graph between them.

    Attributes:
        enc_layer, dec_layer: the tap names as given.
        captured: the captured generator.
        enc_node, dec_node: the tap nodes in ``captured.gm.graph``.
        enc, dec: :class:`~shortcutify.core.taps.TapInfo` of the taps (shapes on the example input).
        copy_enc, copy_dec: whether a later in-place op may change the tap's value (it then
            leaves the keyframe program as a copy).
        shortcut: the shortcut graph (owned by a ``GraphModule`` whose ``shortcut_block`` is a
            stand-in; :func:`~shortcutify.core.programs.build_programs` copies it).
        skipped: node names of the generator that shortcut frames do not run.
        skipped_macs: their multiply-adds on the example input.
        signature: :func:`graph_signature` of the generator with the taps marked.
        ignored_inputs: the generator's inputs (placeholder names) that the teacher reads but
            shortcut frames do not: every path from them to the output runs through the skipped
            part, so between keyframes the output cannot follow them.
        shape_kept: node names of the generator that shortcut frames run only because a later layer
            reads their shape (``h.shape`` in a graph that keeps shapes symbolic: torch.fx); their MACs
            are paid on shortcut frames although the block predicts past them.
        side_kept: node names between the taps (computed from the encoder tap, feeding the decoder tap) that
            shortcut frames still run because something else reads their values (side outputs such as hidden
            states or attention maps, a branch around the decoder tap); shape_kept ones aside.
    """

    enc_layer: str
    dec_layer: str
    captured: Captured
    enc_node: fx.Node
    dec_node: fx.Node
    enc: TapInfo
    dec: TapInfo
    copy_enc: bool
    copy_dec: bool
    shortcut: fx.GraphModule
    skipped: tuple[str, ...]
    skipped_macs: int
    signature: tuple[str, ...]
    ignored_inputs: tuple[str, ...] = ()
    shape_kept: tuple[str, ...] = ()
    side_kept: tuple[str, ...] = ()


class _BlockSlot(nn.Module):
    """Where the shortcut block goes (opaque to the effect analysis, as the real block is)."""


def _tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The node's tensor shape on the example, ``None`` where it is not one tensor."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta[0]) if meta is not None else None


def _check_4d(node: fx.Node, role: str, name: str, unbatched: bool = False) -> tuple[int, int, int, int]:
    """The tap's shape ``[B, C, H, W]``; ``unbatched``: the example gave frames without their batch dimension."""
    meta = node.meta.get("tensor_meta")
    if meta is None:
        parts = [
            f"{u.name} {_tensor_shape(u)}" for u in node.users
            if u.op == "call_function" and u.target is operator.getitem and _tensor_shape(u) is not None
        ]
        hint = (
            f": it returns a tuple or list (nn.MultiheadAttention returns (output, weights)); tap one of its tensors, "
            f"the nodes {parts}" if parts else "; pick a tap from list_taps() (column 'shape')"
        )
        raise TapShapeError(f"{role} {name!r} (node {node.name!r}) is not a tensor on the example input{hint}")
    shape = meta[0]
    if len(shape) != 4:
        raise TapShapeError(
            f"{role} {name!r} (node {node.name!r}) has shape {tuple(shape)}; a tap must be a 4-D "
            "feature map [B, C, H, W]. Pick another tap from list_taps() (column 'shape')"
            + (", or give example_inputs with their batch dimension (frames [B, C, H, W]: x.unsqueeze(0))." if unbatched else ".")
        )
    dtype = meta[1]
    if not dtype.is_floating_point:
        raise TapShapeError(
            f"{role} {name!r} (node {node.name!r}) is a {dtype} tensor; a tap must be a real floating-point feature map "
            "(the block's convolutions are real): pick a floating value from list_taps(), such as the conv before "
            "or after it" + (" (a Fourier unit's complex values: a tap outside the transform)." if dtype.is_complex else ".")
        )
    return tuple(shape)  # type: ignore[return-value]


def root_dict(gm: fx.GraphModule, graph: fx.Graph) -> dict[str, object]:
    """The submodules and attributes of ``gm`` that ``graph`` reads (not the block)."""
    root: dict[str, object] = {}
    for n in graph.nodes:
        if n.op in ("call_module", "get_attr") and n.target != BLOCK_NAME:
            obj: object = gm
            for part in n.target.split("."):
                obj = getattr(obj, part)
            root[n.target] = obj
    return root


def graph_signature(captured: Captured, enc: fx.Node, dec: fx.Node) -> tuple[str, ...]:
    """One line per node of the generator's graph: its op, what it computes and its inputs.

    Marks the taps and includes module hyper-parameters (their ``repr``), not weights;
    two generators with equal signatures can share a shortcut block.
    """
    gm = captured.gm
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    lines = []
    for n in gm.graph.nodes:
        what = repr(gm.get_submodule(n.target)) if n.op == "call_module" else describe(gm, n)
        what = " ".join(what.split())
        tap = " <enc>" if n is enc else " <dec>" if n is dec else ""
        lines.append(f"{n.name}: {n.op} {what} <- {[index[a] for a in n.all_input_nodes]}{tap}")
    return tuple(lines)


def _shape_only(user: fx.Node) -> bool:
    """Whether ``user`` reads only its input's shape (``x.shape``, ``x.size()``, ``x.dim()``)."""
    if user.op == "call_function" and user.target is getattr:
        return len(user.args) > 1 and user.args[1] in ("shape", "ndim", "dtype", "device")
    if user.op == "call_method":
        return user.target in ("size", "dim")
    return user.op == "call_function" and getattr(user.target, "__name__", "") in ("sym_size", "sym_size.int")


def _reads_values(node: fx.Node) -> bool:
    """Whether some user of ``node`` reads its values, not only its shape."""
    return any(not _shape_only(u) for u in node.users)


def _check_order(captured: Captured, enc: fx.Node, dec: fx.Node, enc_layer: str, dec_layer: str) -> None:
    for node, role, name in ((enc, "enc_layer", enc_layer), (dec, "dec_layer", dec_layer)):
        if node.op in ("placeholder", "get_attr"):
            raise TapOrderError(
                f"{role} {name!r} is {'an input' if node.op == 'placeholder' else 'a constant'} of the model; "
                "taps must be values the model computes. Pick one from list_taps()."
            )
    if enc is dec:
        raise TapOrderError(f"enc_layer {enc_layer!r} and dec_layer {dec_layer!r} are the same value ({enc.name!r})")
    for node, role, name in ((enc, "enc_layer", enc_layer), (dec, "dec_layer", dec_layer)):
        if not any(a.op == "placeholder" for a in ancestors(node)):
            raise TapShapeError(
                f"{role} {name!r} (node {node.name!r}) is computed from the generator's weights alone (a "
                "parametrization's weight, a position table), not from its inputs; taps are feature maps of the frames: "
                "pick them from list_taps()."
            )
    unbatched = any(len(n.meta.get("tensor_meta", ((0, 0, 0, 0),))[0]) == 3 for n in captured.gm.graph.nodes if n.op == "placeholder")
    _check_4d(enc, "enc_layer", enc_layer, unbatched)
    _check_4d(dec, "dec_layer", dec_layer, unbatched)
    order = {n: i for i, n in enumerate(captured.gm.graph.nodes)}
    output_node = next(n for n in captured.gm.graph.nodes if n.op == "output")
    if enc.users and all(u is output_node for u in enc.users):  # (the generator's output, e.g. the module that runs it all)
        raise TapOrderError(
            f"enc_layer {enc_layer!r} (node {enc.name!r}) is what the generator returns: no layer runs after it, so "
            "there is nothing for a decoder tap to follow. Taps are values inside the generator: pick them from "
            "list_taps(), e.g. the output of an encoder layer and of a later decoder layer."
        )
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
    if dec not in ancestors(output_node):
        raise TapOrderError(f"dec_layer {dec_layer!r} (node {dec.name!r}) does not reach the model's output")


def resolve_cut(captured: Captured, enc_layer: str, dec_layer: str) -> Cut:
    """Validate the taps of an annotated :class:`Captured` and build the shortcut graph.

    Raises:
        UnknownTapError, AmbiguousTapError, TapOrderError, TapShapeError, EmptyCutError:
            with a message that says what to change.
    """
    enc = resolve_tap(captured, enc_layer, "enc_layer")
    dec = resolve_tap(captured, dec_layer, "dec_layer")
    _check_order(captured, enc, dec, enc_layer, dec_layer)
    modules = dict(captured.gm.named_modules())
    copy_enc, copy_dec = may_be_mutated(enc, modules), may_be_mutated(dec, modules)

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(captured.gm.graph, env)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    with graph.inserting_after(placeholders[-1]):
        ref = graph.placeholder(REFERENCE_INPUT, default_value=None)
    with graph.inserting_after(ref):
        want_aligned = graph.placeholder(ALIGNED_INPUT, default_value=False)
    with graph.inserting_after(env[enc]):
        blk = graph.call_module(BLOCK_NAME, (env[enc], ref), {"return_aligned": want_aligned})
    with graph.inserting_after(blk):
        f_hat = graph.call_function(operator.getitem, (blk, 0))
    with graph.inserting_after(f_hat):
        aligned = graph.call_function(operator.getitem, (blk, 1))
    env[dec].replace_all_uses_with(f_hat)
    # the output value was built by graph_copy before the replacement: a decoder tap that is
    # also an output (a recurrent generator's new state) is returned as the prediction too
    out = fx.node.map_arg(out, lambda n: f_hat if n is env[dec] else n)
    f_hat_out = f_hat
    if copy_dec:  # returned for the losses: kept safe from in-place ops of the tail
        with graph.inserting_after(aligned):
            f_hat_out = graph.call_method("clone", (f_hat,))
    graph.output((out, f_hat_out, aligned))
    root = root_dict(captured.gm, graph)
    root[BLOCK_NAME] = _BlockSlot()
    shortcut = fx.GraphModule(root, graph, "ShortcutProgram")
    shortcut.graph.eliminate_dead_code(is_impure_node=keeps_writes(shortcut.graph, dict(shortcut.named_modules())))
    shortcut.delete_all_unused_submodules()

    alive = set(shortcut.graph.nodes)
    skipped = tuple(n.name for n in captured.gm.graph.nodes if n in env and env[n] not in alive)
    skipped_macs = sum(captured.macs.get(name, 0) for name in skipped)
    if skipped_macs == 0:
        raise EmptyCutError(
            f"the cut between enc_layer {enc_layer!r} and dec_layer {dec_layer!r} skips no multiply-adds "
            f"(skipped nodes: {list(skipped)}); a shortcut block would only add cost. Choose taps further apart: "
            "list_taps() shows the MACs up to each node."
        )
    valued = _value_needed(shortcut.graph)
    shape_kept = tuple(
        n.name for n in captured.gm.graph.nodes
        if n in env and env[n] in alive and env[n] not in valued and captured.macs.get(n.name, 0) > 0
    )
    ignored = tuple(
        n.name for n in captured.gm.graph.nodes
        if n.op == "placeholder" and _reads_values(n) and n in env and env[n] in alive and not _reads_values(env[n])
    )
    between = ancestors(dec) & _descendants(enc)
    side_kept = tuple(
        n.name for n in captured.gm.graph.nodes
        if n in between and n is not enc and env[n] in alive and n.name not in shape_kept and captured.macs.get(n.name, 0) > 0
    )
    return Cut(
        enc_layer=enc_layer,
        dec_layer=dec_layer,
        captured=captured,
        enc_node=enc,
        dec_node=dec,
        enc=tap_info(captured, enc),
        dec=tap_info(captured, dec),
        copy_enc=copy_enc,
        copy_dec=copy_dec,
        shortcut=shortcut,
        skipped=skipped,
        skipped_macs=skipped_macs,
        signature=graph_signature(captured, enc, dec),
        ignored_inputs=ignored,
        shape_kept=shape_kept,
        side_kept=side_kept,
    )


def _descendants(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node that depends on it."""
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.users)
    return seen


def _value_needed(graph: fx.Graph) -> set[fx.Node]:
    """The nodes whose values the output needs: reached from the output through every input but those
    that a node reads only the shape of (:func:`_shape_only`), and through in-place writes kept alive."""
    needed: set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op == "output" or (len(n.users) == 0 and n.op != "placeholder")]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        if not _shape_only(node):
            stack.extend(node.all_input_nodes)
    return needed
