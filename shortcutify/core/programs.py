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
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from .cut import BLOCK_NAME, Cut, root_dict
from .effects import keeps_writes

__all__ = ["Programs", "build_programs"]


@dataclass
class Programs:
    """The keyframe, shortcut and inference programs of one cut and one block."""

    keyframe: fx.GraphModule
    shortcut: fx.GraphModule
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
