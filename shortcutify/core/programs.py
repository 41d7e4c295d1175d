"""The three programs a :class:`~shortcutify.ShortcutV2V` runs, built from a :class:`~shortcutify.core.cut.Cut`.

* **keyframe** ``(*inputs) -> (output, a, f)``: the generator's graph with the tap values as
  extra outputs; ``output`` is the teacher's output exactly;
* **shortcut** ``(*inputs, shortcut_reference=ref, shortcut_return_aligned=False) -> (output, f_hat, aligned)``:
  the shortcut graph of the cut with the block in it; keeps ``f_hat`` for the losses and for
  inspection; ``ref`` is a prepared reference or the keyframe's raw
  :class:`~shortcutify.core.blocks.KeyframeTaps` (training);
* **inference** ``(*inputs, shortcut_reference=ref) -> output``: the shortcut program
  returning the output alone, so that ``f_hat`` is freed as soon as the tail has read it.

All three share the generator's submodules and the block.

For keyframe policies that look at the encoder tap before deciding
(:class:`~shortcutify.core.policy.AdaptiveKeyframes`), :func:`build_stages` splits the
keyframe and inference programs at the encoder tap into a shared **head** and two **rests**:

* head ``(*inputs) -> (a, *boundary)``: everything a shortcut frame computes before the
  block, in the graph's order; ``boundary`` are the head's values that later nodes read;
* keyframe rest ``(*inputs, **{stage_<name>: value}) -> (output, a, f)``;
* inference rest ``(*inputs, **{stage_<name>: value}, shortcut_reference=ref) -> output``.

A frame first runs the head, the policy then decides, and the chosen rest continues from
the head's values: a keyframe decided this way runs no layer twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from .cut import ALIGNED_INPUT, BLOCK_NAME, REFERENCE_INPUT, Cut, root_dict
from .effects import effect, keeps_writes

__all__ = ["Programs", "Stages", "build_programs", "build_stages", "STAGE_PREFIX"]

STAGE_PREFIX = "stage_"


@dataclass
class Programs:
    """The keyframe, shortcut and inference programs of one cut and one block."""

    keyframe: fx.GraphModule
    shortcut: fx.GraphModule
    inference: fx.GraphModule
    stages: Stages | None = field(default=None, repr=False)  # built on first use (build_stages)

    def staged(self) -> Stages:
        """The programs split at the encoder tap (built once, then kept)."""
        if self.stages is None:
            self.stages = build_stages(self)
        return self.stages


@dataclass(frozen=True)
class Stages:
    """The keyframe and inference programs split at the encoder tap (see the module docstring).

    Attributes:
        head: ``(*inputs) -> (a, *boundary values)``.
        boundary: the rests' keyword names for the boundary values, in the head's output order.
        keyframe: the keyframe rest, or ``None`` when splitting would reorder an in-place op
            (run the whole keyframe program then).
        inference: the inference rest.
    """

    head: fx.GraphModule
    boundary: tuple[str, ...]
    keyframe: fx.GraphModule | None
    inference: fx.GraphModule


def _keyframe_program(cut: Cut) -> fx.GraphModule:
    gm = cut.captured.gm
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(gm.graph, env)
    taps_out = []
    # a tap value that a later in-place op may change (ReLU(inplace=True) after a norm)
    # leaves the program as a copy taken right where it is computed; others as they are
    for orig, copy in ((cut.enc_node, cut.copy_enc), (cut.dec_node, cut.copy_dec)):
        node = env[orig]
        if copy:
            with graph.inserting_after(node):
                node = graph.call_method("clone", (node,))
        taps_out.append(node)
    graph.output((out, *taps_out))
    return fx.GraphModule(root_dict(gm, graph), graph, "KeyframeProgram")


def build_programs(cut: Cut, block: nn.Module) -> Programs:
    """The keyframe, shortcut and inference programs of ``cut`` with ``block`` in the shortcut.

    ``block`` is called as ``block(a, reference, return_aligned=...) -> (f_hat, aligned)``.
    """
    sgraph = fx.Graph()
    s_out = sgraph.graph_copy(cut.shortcut.graph, {})
    sgraph.output(s_out)
    root = root_dict(cut.shortcut, sgraph)
    root[BLOCK_NAME] = block
    shortcut = fx.GraphModule(root, sgraph, "ShortcutProgram")

    igraph = fx.Graph()
    i_out = igraph.graph_copy(shortcut.graph, {})
    igraph.output(i_out[0])
    inference = fx.GraphModule(shortcut, igraph, "ShortcutInferenceProgram")
    inference.graph.eliminate_dead_code(is_impure_node=keeps_writes(inference.graph, dict(inference.named_modules())))
    inference.delete_all_unused_submodules()
    inference.recompile()
    return Programs(keyframe=_keyframe_program(cut), shortcut=shortcut, inference=inference)


def _block_node(graph: fx.Graph) -> fx.Node:
    return next(n for n in graph.nodes if n.op == "call_module" and n.target == BLOCK_NAME)


def _rest(
    source: fx.GraphModule, head_names: set[str], boundary: dict[str, str], output: object, name: str
) -> fx.GraphModule:
    """``source``'s graph without the head's nodes: placeholders for the inputs and the boundary values."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    nodes = list(source.graph.nodes)
    for n in nodes:
        if n.op == "placeholder":
            env[n] = graph.node_copy(n)
    for n in nodes:
        if n.op != "placeholder" and n.name in boundary:
            env[n] = graph.placeholder(boundary[n.name], default_value=None)
    for n in nodes:
        if n.op == "get_attr" and n.name in head_names:  # a constant the head read: read again, not passed
            env[n] = graph.node_copy(n, lambda m: env[m])
    for n in nodes:
        if n.op in ("placeholder", "output") or n.name in head_names:
            continue
        env[n] = graph.node_copy(n, lambda m: env[m])
    graph.output(fx.node.map_arg(output, lambda m: env[m]))
    root = root_dict(source, graph)
    if BLOCK_NAME in {n.target for n in graph.nodes if n.op == "call_module"}:
        root[BLOCK_NAME] = source.get_submodule(BLOCK_NAME)
    gm = fx.GraphModule(root, graph, name)
    gm.graph.eliminate_dead_code(is_impure_node=keeps_writes(gm.graph, dict(gm.named_modules())))
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def build_stages(programs: Programs) -> Stages:
    """Split ``programs``' keyframe and inference programs at the encoder tap.

    The head is the shortcut program's nodes before the block (in order); the keyframe rest
    is the keyframe program without them. A node of the keyframe program that comes before
    the encoder tap but is not in the head (it feeds only the skipped part) moves after it;
    if the graph writes in place anywhere before the encoder tap, that move could change a
    value, and the keyframe rest is not built (:attr:`Stages.keyframe` is ``None``).
    """
    short = programs.shortcut
    nodes = list(short.graph.nodes)
    block = _block_node(short.graph)
    enc = block.args[0]
    assert isinstance(enc, fx.Node)
    head_nodes = [n for n in nodes[: nodes.index(block)] if n.name not in (REFERENCE_INPUT, ALIGNED_INPUT)]
    head_names = {n.name for n in head_nodes}
    key = programs.keyframe
    key_nodes = {n.name: n for n in key.graph.nodes}

    def read_later(graph_nodes: list[fx.Node], inside: set[str]) -> list[str]:
        return [
            n.name for n in graph_nodes
            if n.name in inside and n.op not in ("placeholder", "get_attr")
            and any(u.name not in inside for u in n.users)
        ]

    used = set(read_later(nodes, head_names)) | set(read_later(list(key.graph.nodes), head_names)) | {enc.name}
    order = [enc.name] + [n.name for n in head_nodes if n.name in used and n.name != enc.name]
    boundary = {name: f"{STAGE_PREFIX}{name}" for name in order}

    hgraph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in head_nodes:
        env[n] = hgraph.node_copy(n, lambda m: env[m])
    hgraph.output(tuple(env[next(m for m in head_nodes if m.name == name)] for name in order))
    head = fx.GraphModule(root_dict(short, hgraph), hgraph, "HeadProgram")

    s_out = next(n for n in nodes if n.op == "output").args[0]
    inference = _rest(short, head_names, boundary, s_out[0], "InferenceRestProgram")  # type: ignore[index]

    key_list = list(key.graph.nodes)
    missing = head_names - set(key_nodes)
    keyframe = None
    if not missing:
        enc_at = key_list.index(key_nodes[enc.name])
        before = key_list[:enc_at]
        moved = [n for n in before if n.name not in head_names and n.op not in ("placeholder", "get_attr")]
        modules = dict(key.named_modules())
        writes = any(effect(n, modules) == "write" for n in before if n.op in ("call_function", "call_method", "call_module"))
        if not (moved and writes):
            k_out = next(n for n in key_list if n.op == "output").args[0]
            keyframe = _rest(key, head_names, boundary, k_out, "KeyframeRestProgram")
    return Stages(head=head, boundary=tuple(boundary.values()), keyframe=keyframe, inference=inference)
