"""Automatic taps: rank (encoder tap, decoder tap) pairs of a generator for a shortcut.

:func:`suggest_taps` captures the generator once, considers every pair of taps that
:func:`~shortcutify.shortcutify` accepts, and ranks them by the multiply-adds a shortcut frame
would save, discounted by how hard the skipped part is to predict (the proxy is described in
:func:`suggest_taps`).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten
from typing_extensions import Unpack

from ..errors import EmptyCutError, InputMismatchError, TapOrderError, TapShapeError
from .blocks.sizing import AUTO, auto_layout, auto_width, block_macs, check_layout_choice
from .capture import CaptureKwargs, CaptureOptions, Captured, as_tuple, capture, fresh, unwrap
from .caller import warn_caller
from .checks import check_flag, check_like_example, frame_aspect, frames_batch, is_count, looks_channels_last, shapes_of, tap_looks_channels_last, weights_dtype
from .cut import resolve_cut
from .outputs import OutputSelector, check_selector, output_image
from .taps import TableList, TapInfo, feeds_depth_to_space, resolve_tap, tap_infos

__all__ = ["TapSuggestion", "TapSuggestions", "suggest_taps"]

#: the default second frame: the example translated by this many pixels (down, right)
SHIFT = (2, 2)
#: at most this many frame pairs of a clip are compared (evenly spread over it)
MAX_FRAME_PAIRS = 3
#: the proxy is measured on at most this many pairs (those that skip the most MACs)
MAX_MEASURED = 96
#: the progress bar of the proxy's measurements appears once they have run this long (seconds)
PROGRESS_DELAY_S = 2.0
#: ridge penalty of the linearisation, relative to the mean diagonal of the Gram matrix
RIDGE = 1e-2


@dataclass(frozen=True)
class TapSuggestion:
    """One ranked pair of taps; pass ``enc_layer`` and ``dec_layer`` to :func:`~shortcutify.shortcutify`.

    Attributes:
        enc_layer, dec_layer: the tap names: the module qualified name where the value is a
            module's output (the most specific one), else the fx node name.
        enc, dec: the taps' :class:`~shortcutify.core.taps.TapInfo` (shapes ``[B, C, H, W]`` on
            the example inputs).
        width: the block width ``shortcutify()`` would choose for them (``resolution`` as asked).
        resolution: the block layout ``shortcutify()`` would build for them (``"half"`` or
            ``"full"``: the one asked for, or the one ``resolution="auto"`` chose).
        skipped_macs: MACs of the generator that a shortcut frame does not run, on the example
            inputs (one multiply-add = one).
        block_macs: MACs of one call of the block at that width.
        teacher_macs: MACs of the whole generator on the example inputs.
        difficulty: the proxy for how hard the skipped part is to predict, in ``[0, 1]``
            (dimensionless): the share of the output's frame-to-frame change (squared error)
            that a linearisation of the skipped part fails to reproduce (see :func:`suggest_taps`).
        score: ``ln(speedup) * (1 - difficulty)``; suggestions are sorted by it.
    """

    enc_layer: str
    dec_layer: str
    enc: TapInfo
    dec: TapInfo
    width: int
    skipped_macs: int
    block_macs: int
    teacher_macs: int
    difficulty: float
    score: float
    resolution: str

    @property
    def saved_macs(self) -> int:
        """MACs a shortcut frame saves against the teacher: skipped minus the block's."""
        return self.skipped_macs - self.block_macs

    @property
    def saved_fraction(self) -> float:
        """``saved_macs`` as a fraction of the teacher's MACs."""
        return self.saved_macs / self.teacher_macs if self.teacher_macs else 0.0

    @property
    def speedup(self) -> float:
        """The teacher's MACs over a shortcut frame's (dimensionless; ``inf`` if a shortcut frame costs none)."""
        return _speedup(self.teacher_macs, self.teacher_macs - self.saved_macs)


class TapSuggestions(TableList):
    """A list of :class:`TapSuggestion`, best first, that prints as a table."""

    def __str__(self) -> str:
        rows = [("#", "enc_layer", "dec_layer", "enc shape", "dec shape", "block", "width", "MACs saved", "saved", "speed-up", "difficulty", "score")]
        for i, s in enumerate(self, 1):
            rows.append((
                str(i), s.enc_layer, s.dec_layer, "x".join(map(str, s.enc.shape)), "x".join(map(str, s.dec.shape)),
                s.resolution, str(s.width), f"{s.saved_macs:,}", f"{s.saved_fraction:.1%}", f"{s.speedup:.2f}x", f"{s.difficulty:.3f}", f"{s.score:.3f}",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        left = {1, 2, 3, 4, 5}
        lines = ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _speedup(teacher_macs: int, shortcut_macs: int) -> float:
    """``teacher_macs / shortcut_macs``; ``inf`` when the shortcut costs nothing."""
    return teacher_macs / shortcut_macs if shortcut_macs > 0 else math.inf


def _score(teacher_macs: int, shortcut_macs: int, difficulty: float) -> float:
    """``ln(teacher_macs / shortcut_macs) * (1 - difficulty)``, the ranking's score (see :func:`suggest_taps`);
    0 for a cut whose change the proxy misses entirely (``difficulty`` 1), however cheap."""
    if difficulty >= 1.0:
        return 0.0
    return math.log(_speedup(teacher_macs, shortcut_macs)) * (1.0 - difficulty)


# ----------------------------------------------------------------------------- the graph
class _Graph:
    """A captured graph's nodes in order, what each depends on, and the MACs a cut skips.

    ``skipped(encs, d)`` follows :func:`~shortcutify.core.cut.resolve_cut`: a shortcut frame runs
    what the output needs once the decoder tap's value comes from the block (which reads
    the encoder tap); the rest is skipped. (``resolve_cut`` also keeps in-place writes
    alive: the suggestions returned are checked with it.)
    """

    def __init__(self, captured: Captured) -> None:
        self.nodes = list(captured.gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.macs = torch.tensor([float(captured.macs.get(n.name, 0)) for n in self.nodes], dtype=torch.float64)
        self.total = sum(captured.macs.get(n.name, 0) for n in self.nodes)
        self.output = next(n for n in self.nodes if n.op == "output")
        n = len(self.nodes)
        self.inputs = [[self.index[a] for a in node.all_input_nodes] for node in self.nodes]  # (by index: walked often)
        self.ancestors = torch.zeros(n, n, dtype=torch.bool)  # row i: node i and every node it depends on
        for i, inputs in enumerate(self.inputs):  # in order: a node's inputs come before it
            self.ancestors[i, i] = True
            for a in inputs:
                self.ancestors[i] |= self.ancestors[a]

    def kept_without(self, dec: fx.Node) -> Tensor:
        """``[N]`` bool: the nodes the output needs when ``dec``'s value is given (``dec`` excluded)."""
        given, kept = self.index[dec], bytearray(len(self.nodes))
        stack = [self.index[self.output]]
        while stack:
            i = stack.pop()
            if i == given or kept[i]:
                continue
            kept[i] = 1
            stack.extend(self.inputs[i])
        return torch.frombuffer(kept, dtype=torch.uint8).bool()

    def skipped(self, encs: Sequence[fx.Node], dec: fx.Node) -> list[int]:
        """MACs skipped by the cut of each encoder tap in ``encs`` with the decoder tap ``dec``."""
        rows = self.ancestors[[self.index[e] for e in encs]] | self.kept_without(dec)
        return [self.total - round(v) for v in (rows.double() @ self.macs).tolist()]


def _tap_name(captured: Captured, node: fx.Node, info: TapInfo) -> str:
    """How a user names ``node``: its most specific module qualified name, else its node name."""
    for name in sorted(info.modules, key=lambda q: (-q.count("."), q)):
        try:
            if resolve_tap(captured, name, "tap") is node:
                return name
        except (KeyError, ValueError):  # a name another node or module shadows
            continue
    return node.name


def _input_shapes(graph: _Graph) -> list[tuple[int, ...]]:
    """The shapes of the graph's tensor inputs on the example (as :func:`~shortcutify.core.checks.shapes_of` reads them)."""
    return [tuple(n.meta["tensor_meta"][0]) for n in graph.nodes if n.op == "placeholder" and "tensor_meta" in n.meta]


def _frame_shaped(shape: tuple[int, ...], aspect: float | None) -> bool:
    """Whether a 4-D value ``[B, C, H, W]`` has the frame's aspect, as the feature maps of a convolutional
    generator have (within a pixel, or a fifth of the size, of rounding); a transformer's heads
    ``[B, tokens, heads, dim]`` have not."""
    if aspect is None:
        return True
    h, w = shape[2], shape[3]
    return abs(h - aspect * w) <= max(1.0, 0.2 * max(h, aspect * w))


def _candidates(captured: Captured, graph: _Graph) -> tuple[list[list[fx.Node]], dict[fx.Node, TapInfo]]:
    """The nodes that can be taps, as tiers to try in turn, and their :class:`TapInfo`.

    A tap is a computed 4-D floating-point value that the output needs. First tier: module
    outputs (users name taps by module) that are feature maps, with more channels than the
    generator's input and output images (a 3-channel tap is an image: the block, half as
    wide as the narrower tap, would be a few channels wide), that do not look channels-last
    (:func:`~shortcutify.core.checks.tap_looks_channels_last`) and that have the frame's aspect (:func:`_frame_shaped`: not a
    transformer's heads), and the residual sums among such feature maps that no module output passes on
    (:func:`_is_residual_sum`: ``h = h + f(h)`` written in a ``forward``, where the sum, not the module's output
    ``f(h)``, holds the features a cut must predict); then such feature maps of any node; then module outputs;
    then all of them.

    Raises:
        TapShapeError: the generator computes no such value.
    """
    infos = {t.name: t for t in tap_infos(captured)}
    needed = graph.ancestors[graph.index[graph.output]]
    images = [
        n.meta["tensor_meta"][0][1] for n in graph.nodes
        if (n.op == "placeholder" or n in graph.output.all_input_nodes) and len(n.meta.get("tensor_meta", ((),))[0]) == 4
    ]
    image_channels = max(images, default=0)
    batch = frames_batch(_input_shapes(graph))  # (a value with fewer rows folds the batch into its channels: check_tap_rows)
    dtype = weights_dtype(captured.gm)  # (the block's dtype, as shortcutify() chooses it)
    nodes, info_of = [], {}
    for node in graph.nodes:
        info = infos.get(node.name)
        meta = node.meta.get("tensor_meta")
        if info is None or not info.is_4d or meta is None or not meta[1].is_floating_point or (dtype is not None and meta[1] != dtype):
            continue
        if needed[graph.index[node]] and min(info.shape) >= 1 and info.shape[0] >= batch:
            nodes.append(node)
            info_of[node] = info
    if not nodes:
        raise TapShapeError(
            f"{type(captured.gm).__name__} computes no 4-D floating-point feature map [B, C, H, W] that its output "
            "depends on, so it has no candidate taps. A shortcut needs a convolutional generator (image-like features): "
            "check list_taps(model, example_inputs) (column 'shape') and that example_inputs are frames [B, C, H, W]."
        )
    aspect = frame_aspect(_input_shapes(graph))
    features = [
        n for n in nodes
        if info_of[n].shape[1] > image_channels and not tap_looks_channels_last(info_of[n].shape, aspect) and _frame_shaped(info_of[n].shape, aspect)
    ]
    modules = [n for n in nodes if info_of[n].modules]
    chain = _chains(graph)
    passed_on = {chain[n] for n in features if info_of[n].modules}  # (chains that a module's output names)
    named = [n for n in features if info_of[n].modules or (_is_residual_sum(n) and chain[n] not in passed_on)]
    tiers = [named, features, modules, nodes]
    return [t for i, t in enumerate(tiers) if t and t not in tiers[:i]], info_of


#: a difficulty at or below which every cut measuring it is reported as barely told apart (see suggest_taps' warnings)
LOW_DIFFICULTY = 0.01

#: MACs per output element up to which a layer counts as passing its input on (a norm: fvcore counts 5)
PASS_ON_MACS = 5


_SUMS = (operator.add, operator.iadd, torch.add, torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)


def _addends(node: fx.Node) -> list[fx.Node] | None:
    """The two computed 4-D values of its own shape that ``node`` adds (``h + f(h)``, as torch.fx or torch.export
    records it; not a value plus a weight, such as a position embedding); ``None`` where it is no such sum."""
    if not ((node.op == "call_function" and node.target in _SUMS) or (node.op == "call_method" and node.target in ("add", "add_"))):
        return None
    shape = node.meta.get("tensor_meta", ((),))[0]
    parts = [a for a in node.all_input_nodes if a.op not in ("get_attr", "placeholder") and a.meta.get("tensor_meta", ((),))[0] == shape]
    return parts if len(shape) == 4 and len(parts) == 2 else None


def _is_residual_sum(node: fx.Node) -> bool:
    """Whether ``node`` adds two computed 4-D values of its own shape (:func:`_addends`)."""
    return _addends(node) is not None


def _skipped_addend(node: fx.Node, skipped: Sequence[str]) -> fx.Node | None:
    """Where ``node`` is a residual sum (:func:`_addends`) of one addend that a cut skips (by node name in
    ``skipped``) and one it does not, the skipped addend; else ``None``."""
    inside = [a for a in _addends(node) or () if a.name in skipped]
    return inside[0] if len(inside) == 1 else None


def _chains(graph: _Graph) -> dict[fx.Node, fx.Node]:
    """Each node's chain, named by its first node: a node joins its input's chain when it passes that
    value on, as a norm, an activation or a dropout does after a conv: its one 4-D input, used by it
    alone, has its shape, and it costs at most :data:`PASS_ON_MACS` per element. Cuts between the same
    chains are variants of one cut (taps on a conv, its norm or its activation)."""
    chain: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        chain[node] = node
        meta = node.meta.get("tensor_meta")
        if meta is None or len(meta[0]) != 4 or node.op not in ("call_module", "call_function", "call_method"):
            continue
        data = [a for a in node.all_input_nodes if a.op != "get_attr" and len(a.meta.get("tensor_meta", ((),))[0]) == 4]
        if len(data) != 1 or len(data[0].users) != 1 or data[0].meta["tensor_meta"][0] != meta[0]:
            continue
        if graph.macs[graph.index[node]] <= PASS_ON_MACS * math.prod(meta[0]):
            chain[node] = chain[data[0]]
    return chain


# ----------------------------------------------------------------------------- frames and values
def _is_frame(x: Any) -> bool:
    """Frames ``[B, C, H, W]`` (or ``[B, H, W, C]``), or a stack of them ``[B, C, D, H, W]`` (3-D convolutions)."""
    return isinstance(x, Tensor) and x.dim() in (4, 5) and x.is_floating_point()


def _is_map(x: Any) -> bool:
    """A label map ``[B, H, W]`` or ``[B, 1, H, W]`` of integers (or a mask of booleans): the frames of a
    semantic-map-to-video generator, moved as frames are where no input is a floating frame."""
    return isinstance(x, Tensor) and not x.is_floating_point() and not x.is_complex() and (
        x.dim() == 3 or (x.dim() == 4 and x.shape[1] == 1)
    )


def _translate(x: Tensor, shift: tuple[int, int] = SHIFT) -> Tensor:
    """``x`` ``[B, C, H, W]`` moved ``shift`` pixels down and right, the border replicated (a channels-last
    ``[B, H, W, C]``, :func:`~shortcutify.core.checks.looks_channels_last`, moved in its height and width; a
    stack ``[B, C, D, H, W]`` and a map ``[B, H, W]`` in their last two dimensions). Any dtype (label maps too)."""
    if looks_channels_last(x):
        return _translate(x.movedim(-1, 1), shift).movedim(1, -1)
    dy, dx = shift
    h, w = x.shape[-2:]
    rows = (torch.arange(h, device=x.device) - dy).clamp_(min=0)  # (row i shows row i - dy; the first rows repeat row 0)
    cols = (torch.arange(w, device=x.device) - dx).clamp_(min=0)
    return x.index_select(-2, rows).index_select(-1, cols)


def _frame_pairs(inputs: tuple[Any, ...], frames: Any) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """Pairs (reference inputs, current inputs) of forward's positional arguments.

    Raises:
        ValueError: ``frames`` does not match the example inputs, or has fewer than 2 frames.
    """
    if frames is None:
        movable = _is_frame if any(_is_frame(x) for x in inputs) else _is_map
        if not any(movable(x) for x in inputs):
            raise InputMismatchError(
                f"no example input is a frame [B, C, H, W] or a label map [B, H, W] (shapes {shapes_of(inputs)}), so none "
                "can be moved to make the second frame that ranks the taps: pass suggest_taps(model, example_inputs, "
                "frames=(clip, ...)) clips of real inputs [T, ...] and give shortcutify() the taps it suggests"
            )
        return [(inputs, tuple(_translate(x) if movable(x) else x for x in inputs))]
    clips = tuple(frames) if isinstance(frames, (tuple, list)) else (frames,)
    if len(clips) != len(inputs):
        raise ValueError(
            f"frames must hold one clip [T, ...] per positional argument of forward ({len(inputs)}), or None to keep "
            f"the example's value for an argument; got {len(clips)}"
        )
    lengths = set()
    for i, (clip, x) in enumerate(zip(clips, inputs)):
        if clip is None:
            continue
        if isinstance(clip, Tensor) and isinstance(x, Tensor):
            check_like_example(clip, x, f"frames[{i}]", i, lead="T")  # (uint8 video: its scaling cannot be guessed)
        if not isinstance(clip, Tensor) or not isinstance(x, Tensor) or tuple(clip.shape[1:]) != tuple(x.shape[1:]):
            want = f"[T, {', '.join(map(str, x.shape[1:]))}]" if isinstance(x, Tensor) else "None (the example's value is not a tensor)"
            got = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
            raise ValueError(f"frames[{i}] must be a clip {want} (the example's frame shape), got {got}")
        lengths.add(clip.shape[0])
    if not lengths:
        raise ValueError("frames holds no clip: pass a clip [T, C, H, W] (or a tuple of them)")
    if len(lengths) > 1 or min(lengths) < 2:
        raise ValueError(f"the clips in frames must have one length T >= 2, got lengths {sorted(lengths)}")
    t_max = lengths.pop()
    count = min(MAX_FRAME_PAIRS, t_max - 1)
    ends = sorted({1 + round(k * (t_max - 2) / max(count - 1, 1)) for k in range(count)})

    def frame(t: int) -> tuple[Any, ...]:
        return tuple(
            x if clip is None else clip[t : t + 1].to(x.device, x.dtype).expand(x.shape[0], *x.shape[1:])
            for clip, x in zip(clips, inputs)
        )

    return [(frame(t - 1), frame(t)) for t in ends]


def _run(gm: fx.GraphModule, inputs: tuple[Any, ...], initial_env: dict[fx.Node, Any] | None = None,
         record: dict[fx.Node, Any] | None = None, output: OutputSelector = None) -> list[Tensor]:
    """Run the captured graph (the CPU generator seeded); return its floating-point output tensors (with
    ``output``, the one image it names: :func:`~shortcutify.core.outputs.output_image`).

    ``record``: filled with a copy of every node's value. ``initial_env``: values taken
    as given (nodes in it are not run).
    """

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            if record is not None:
                record[n] = value.clone() if isinstance(value, Tensor) else value
            return value

    state = torch.get_rng_state()
    try:
        torch.default_generator.manual_seed(0)  # random ops draw the same on every run (CPU generator)
        with torch.no_grad():
            out = _Recorder(gm).run(*fresh(inputs), initial_env=initial_env)
    finally:
        torch.set_rng_state(state)
    if output is not None:
        return [output_image(out, output)]
    return [t for t in tree_flatten(out)[0] if isinstance(t, Tensor) and t.is_floating_point()]


# ----------------------------------------------------------------------------- the proxy
def _pixels(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B·H·W, C]`` (one row per position), float32."""
    return x.detach().permute(0, 2, 3, 1).reshape(-1, x.shape[1]).float()


def _resized(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _squared_error(xs: list[Tensor], ys: list[Tensor]) -> float:
    return sum(float((x.double() - y.double()).pow(2).sum()) for x, y in zip(xs, ys))


class _Proxy:
    """The difficulty of each cut, measured on pairs of frames (see :func:`suggest_taps`)."""

    def __init__(self, gm: fx.GraphModule, frame_pairs: list[tuple[tuple[Any, ...], tuple[Any, ...]]], output: OutputSelector = None) -> None:
        self.gm, self.output = gm, output
        self.pairs = []
        change = 0.0
        for ref_inputs, cur_inputs in frame_pairs:
            ref: dict[fx.Node, Any] = {}
            cur: dict[fx.Node, Any] = {}
            y_ref = _run(gm, ref_inputs, record=ref, output=output)
            y_cur = _run(gm, cur_inputs, record=cur, output=output)
            change += _squared_error(y_ref, y_cur)
            self.pairs.append((ref, cur, cur_inputs, y_cur))
        if not math.isfinite(change):
            raise ValueError(
                "the generator's output on the frames holds NaN or infinite values, so no tap can be judged on them: "
                "check that example_inputs (and frames=) are finite and in the generator's value range"
            )
        if change == 0.0:
            inputs_differ = any(
                not torch.equal(a, b)
                for ref_inputs, cur_inputs in frame_pairs
                for a, b in zip(tree_flatten(ref_inputs)[0], tree_flatten(cur_inputs)[0])
                if isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
            )
            if inputs_differ:
                raise ValueError(
                    "the generator's output does not change when its input frames do (the same output on both "
                    "frames of every pair, which differ), so no tap can be judged on them: is its last layer "
                    "initialised to zero (as some diffusion and registration models are before training)? "
                    "Suggest taps on the trained generator."
                )
            raise ValueError(
                "the generator's output is the same on both frames of every pair, so no tap can be judged on them: "
                "pass frames= with frames that differ (a real clip [T, C, H, W])"
            )
        self.change = change
        # every tensor input differs between the frames of some pair (an integer label map is not moved by the
        # default pairs: a tap computed from it alone would look frame-free without being so)
        self.every_input_moves = all(
            any(not torch.equal(ref_inputs[j], cur_inputs[j]) for ref_inputs, cur_inputs in frame_pairs)
            for j, v in enumerate(frame_pairs[0][0]) if isinstance(v, Tensor)
        )
        self._descendants: dict[fx.Node, set[fx.Node]] = {}
        self._designs: dict[tuple[fx.Node, tuple[int, int]], tuple[list[Tensor], list[Tensor], Tensor]] = {}

    def reads_frames(self, enc: fx.Node) -> bool:
        """Whether ``enc``'s value changes between the frames of some pair (a zero initial state made with
        ``x.new_zeros(...)`` does not: a block reading it would see nothing of the current frame)."""
        return any(not torch.equal(ref[enc], cur[enc]) for ref, cur, _, _ in self.pairs)

    def descendants(self, node: fx.Node) -> set[fx.Node]:
        if node not in self._descendants:
            seen, stack = set(), [node]
            while stack:
                n = stack.pop()
                if n not in seen:
                    seen.add(n)
                    stack.extend(n.users)
            self._descendants[node] = seen
        return self._descendants[node]

    def _tail(self, values: dict[fx.Node, Any], inputs: tuple[Any, ...], dec: fx.Node, f: Tensor) -> list[Tensor]:
        """The output with ``dec``'s value replaced by ``f``; everything else as recorded."""
        after = self.descendants(dec)
        env = {}
        for n, v in values.items():
            if n in after:
                continue
            if isinstance(v, Tensor) and n.op != "get_attr" and any(u in after for u in n.users):
                v = v.clone()  # the tail may write into its inputs
            env[n] = v
        env[dec] = f
        return _run(self.gm, inputs, initial_env=env, output=self.output)

    def _design(self, enc: fx.Node, size: tuple[int, int]) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The encoder tap at ``size``: per frame pair the reference's rows with a constant column
        (``[N, Ca + 1]``) and the change of the rows (``[N, Ca]``), and the regularised Gram
        matrix of the reference rows (float64)."""
        key = (enc, size)
        if key not in self._designs:
            refs, changes = [], []
            gram = torch.zeros(0)
            for ref, cur, _, _ in self.pairs:
                x = _pixels(_resized(ref[enc], size))
                changes.append(_pixels(_resized(cur[enc], size)) - x)
                refs.append(torch.cat([x, torch.ones(x.shape[0], 1)], dim=1))
                g = (refs[-1].T @ refs[-1]).double()
                gram = g if gram.numel() == 0 else gram + g
            gram += RIDGE * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0], dtype=gram.dtype)
            self._designs[key] = (refs, changes, gram)
        return self._designs[key]

    def difficulty(self, enc: fx.Node, dec: fx.Node, half: bool) -> float:
        """The share, in ``[0, 1]``, of the output's change that the linearised cut misses.

        ``half``: the block corrects at half the decoder tap's resolution (the predicted
        change is then reduced to what it can express there).
        """
        size = tuple(self.pairs[0][0][dec].shape[-2:])
        refs, changes, gram = self._design(enc, size)
        moment = sum((x.T @ _pixels(ref[dec])).double() for x, (ref, _, _, _) in zip(refs, self.pairs))
        weight = torch.linalg.solve(gram, moment)[:-1].float()  # [Ca, Cf]: the constant cancels in a change
        missed = 0.0
        for (ref, cur, inputs, y_cur), change in zip(self.pairs, changes):
            f_ref = ref[dec]
            b, c, h, w = f_ref.shape
            delta = (change @ weight).reshape(b, h, w, c).permute(0, 3, 1, 2).to(f_ref.dtype)
            if half:
                delta = _half_resolution(delta)
            missed += _squared_error(self._tail(cur, inputs, dec, f_ref + delta), y_cur)
        return min(1.0, missed / self.change)


def _half_resolution(x: Tensor) -> Tensor:
    """``x`` ``[B, C, H, W]`` as a block working at ``(⌈H/2⌉, ⌈W/2⌉)`` can express it: 2x2 means, bilinearly back."""
    h, w = x.shape[-2:]
    if h < 2 and w < 2:
        return x
    small = F.avg_pool2d(F.pad(x, (0, w % 2, 0, h % 2), mode="replicate"), 2, ceil_mode=True)
    return F.interpolate(small, size=(h + h % 2, w + w % 2), mode="bilinear", align_corners=False)[..., :h, :w]


# ----------------------------------------------------------------------------- ranking
@functools.lru_cache(maxsize=4096)
def _block_macs(resolution: str, width: int, enc_shape: tuple[int, ...], dec_shape: tuple[int, ...]) -> int:
    """:func:`~shortcutify.core.blocks.sizing.block_macs`, cached (each call traces a block)."""
    return block_macs(resolution, width, enc_shape, dec_shape)


def _pairs(graph: _Graph, nodes: list[fx.Node], infos: dict[fx.Node, TapInfo]) -> list[tuple[int, fx.Node, fx.Node]]:
    """``(skipped MACs, enc, dec)`` of every pair of ``nodes`` that makes a cut skipping some MACs."""
    found = []
    at = torch.tensor([graph.index[n] for n in nodes], dtype=torch.long)
    rows = torch.tensor([infos[n].shape[0] for n in nodes])
    for k, dec in enumerate(nodes):
        # the other nodes dec is computed from (its row of the ancestor matrix), with its rows (batch)
        upstream = graph.ancestors[graph.index[dec]][at] & (rows == rows[k])
        upstream[k] = False
        encs = [nodes[i] for i in upstream.nonzero().flatten().tolist()]
        if encs:
            found += [(s, e, dec) for s, e in zip(graph.skipped(encs, dec), encs) if s > 0]
    return found


def suggest_taps(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Any],
    *,
    frames: Tensor | Sequence[Tensor | None] | None = None,
    resolution: str = AUTO,
    top: int = 5,
    progress: bool = True,
    output: OutputSelector = None,
    **capture_options: Unpack[CaptureKwargs],
) -> TapSuggestions:
    """Rank pairs of taps ``(enc_layer, dec_layer)`` for :func:`~shortcutify.shortcutify`.

    Candidates are the generator's 4-D floating-point values ``[B, C, H, W]`` that its output
    depends on, paired wherever :func:`~shortcutify.shortcutify` accepts them: the decoder
    tap computed from the encoder tap, the same batch size, and a cut that skips some MACs.
    Preferred, in this order while some pair qualifies: module outputs (users name taps by
    module) that are feature maps (more channels than the generator's input and output
    images: on a 3-channel tap the auto-sized block is 4 channels wide and predicts an image
    rather than a feature) and not laid out channels-last (``[B, H, W, C]`` tokens on the
    frame's grid, told by their aspect), with the residual sums among such feature maps that no module returns
    (``h = h + f(h)`` written in a ``forward``: named by their graph node, e.g. ``add_2``); then feature maps,
    module outputs, any value. A decoder tap used only by a
    pixel shuffle (its channels hold a finer map's sub-pixel phases: :func:`~shortcutify.core.taps.feeds_depth_to_space`)
    is left out while other pairs qualify: the shuffle's output holds the same values on the fine grid. Each pair is scored by

        ``score = ln(speedup) * (1 - difficulty)``

    * ``speedup``: the teacher's MACs over a shortcut frame's (the teacher's minus those the
      cut skips, plus the block's in the layout and at the width ``shortcutify()`` would
      choose for ``resolution``). On the logarithm every halving of a shortcut frame's cost
      counts the same: the saved fraction, which the ranking used before, saturates near 1
      (a cut saving 86% of the MACs runs shortcut frames 1.6 times as fast as one saving
      78%, yet their saved fractions differ by a tenth), so it let easy but costlier cuts win;
    * ``difficulty`` (the proxy for how hard the skipped part is to predict, in ``[0, 1]``):
      on pairs of frames (reference, current), the skipped part is linearised as the block's
      correction path would see it: one per-pixel linear map from the encoder tap (resized to
      the decoder tap's resolution) to the decoder tap, fitted by ridge regression on the
      reference frames, predicts the change ``W (a_cur - a_ref)`` of the decoder tap; with
      a half-resolution block that change is first reduced to what a block working at half the
      decoder tap's resolution can express (2×2 means, bilinearly back). ``f_ref`` plus that
      change replaces the decoder tap of the current frame, the rest of the generator runs
      exactly (skip connections and other inputs included), and ``difficulty`` is the squared
      error of the output against the teacher's over the squared change of the teacher's
      output between the frames (the error of repeating the keyframe), capped at 1.

    Why this proxy: the block adds to the reference a correction computed by a few light
    convolutions of the encoder tap, at half the decoder tap's resolution. A cut is hard to
    predict when the skipped part is far from a local function of the encoder tap (deep,
    nonlinear, wide receptive field), when the encoder tap's resolution or the block's loses
    what the decoder tap needs, and when the layers after the decoder tap pass its errors on
    to the output; the linearisation's output error sees all of these, costs one partial run
    of the generator per pair and frame pair, and is measured where it matters (the output).
    Saving MACs alone would always pick the widest cut; the product trades a cut's speed-up
    against the share of the change it predicts. How the first choice compares with
    the paper's pair after the same short distillation (held-out PSNR and MACs) is measured on
    the cartoon teacher in ``benchmarks/RESULTS.md``, "Automatic taps".
    Translated default frames only exercise motion; a real clip in ``frames`` judges the cuts
    on the changes the generator will see.

    The proxy is measured on the pairs that skip the most MACs (at most
    :data:`MAX_MEASURED`); the best are checked with :func:`~shortcutify.core.cut.resolve_cut`
    and sized as ``shortcutify()`` sizes the block (:func:`~shortcutify.core.blocks.sizing.auto_width`).
    A cut whose shortcut frames would not read one of the inputs the teacher reads (an encoder
    tap on a side branch, so that the skipped part holds every path from the frame to the
    output: ``Cut.ignored_inputs``) is offered only when no other cut fits. Taps on a conv, its
    norm and its activation (a value passed on unchanged in shape by cheap layers) are variants of one
    cut, listed once: the encoder tap at the best-scoring variant, the decoder tap at the head of
    its chain (the conv's output, before its norm and activation). A decoder tap on a residual sum
    one of whose addends shortcut frames compute anyway (a residual around the cut, ``fea + trunk(body(fea))``)
    moves to the addend the cut skips: the same work skipped, and the tail adds the current frame's
    other addend exactly.

    Args:
        model: the generator (measured in eval mode, as ``shortcutify()`` runs it; its modes are
            restored on return).
        example_inputs: a frame ``[B, C, H, W]`` or a tuple of ``forward``'s positional
            arguments; shapes and MACs are measured on it.
        frames: frames to judge the cuts on: a clip ``[T, C, H, W]`` (``T >= 2``; up to
            :data:`MAX_FRAME_PAIRS` pairs of consecutive frames are used), or a tuple with one
            clip per positional argument (``None`` keeps the example's value). Each frame must
            have the example's shape without its batch dimension. Default: the example inputs
            and a copy of them moved :data:`SHIFT` pixels (every 4-D floating-point input).
        resolution: the block layout: ``"auto"`` (default: chosen per pair as ``shortcutify()``
            chooses it), ``"half"`` or ``"full"``.
        top: how many suggestions to return (at least 1).
        progress: show a progress bar of the proxy's measurements (on stderr) once they have
            taken :data:`PROGRESS_DELAY_S` seconds (large frames on a CPU: the proxy runs the
            generator's tail once per measured pair and frame pair).
        output: which part of the generator's output the difficulty judges (as for
            :func:`~shortcutify.distill`: a key, an index or a function; :data:`~shortcutify.core.outputs.OutputSelector`);
            None: every floating tensor of it, summed (a large auxiliary output, such as a flow that no cut
            skips, then weighs in: name the image).
        capture_options: ``capture`` (``"auto"``, ``"fx"``, ``"export"``), ``leaf_modules``,
            ``tracer_kwargs``, ``concrete_args``, as for ``shortcutify()``.

    Returns:
        :class:`TapSuggestions`, best first (fewer than ``top`` if fewer pairs save MACs);
        ``print()`` it for a table. ``shortcutify(model, s.enc_layer, s.dec_layer, example_inputs)``
        accepts each one.

    Raises:
        TapShapeError: the generator computes no 4-D floating-point value its output needs.
        EmptyCutError: no pair of taps makes a shortcut frame cheaper than the teacher.
        UntraceableModelError, CaptureMismatchError: as for ``shortcutify()``.
        ValueError: ``top < 1``, an unknown ``resolution``, or ``frames`` that do not fit.
        TypeError: ``output`` is not a selector. OutputSelectionError: it names no image of the output.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap(model)
    if not is_count(top) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    check_layout_choice(resolution)
    inputs = as_tuple(example_inputs)
    if not any(isinstance(x, Tensor) for x in tree_flatten(list(inputs))[0]):
        raise TypeError("example_inputs must be a tensor [B, C, H, W] or a tuple of forward()'s arguments holding tensors")
    output = check_selector(output, "suggest_taps()")
    progress = check_flag(progress, "progress")
    options = CaptureOptions.from_kwargs(**capture_options)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # measured as shortcutify() runs it; the caller's modes are given back
    try:
        return _suggest(model, inputs, options, frames, resolution, top, progress, output)
    finally:
        for m, mode in modes:
            m.training = mode


def _suggest(
    model: nn.Module, inputs: tuple[Any, ...], options: CaptureOptions, frames: Any, resolution: str, top: int, progress: bool,
    output: OutputSelector = None,
) -> TapSuggestions:
    """:func:`suggest_taps` on checked arguments, ``model`` in eval mode."""
    captured = capture(model, inputs, options)
    graph = _Graph(captured)
    tiers, infos = _candidates(captured, graph)
    for nodes in tiers:  # the first tier with a cut that skips some MACs
        pairs = _pairs(graph, nodes, infos)
        if pairs:
            break
    if not pairs:
        raise EmptyCutError(
            f"no pair of 4-D taps of {type(model).__name__} makes a cut that skips any multiply-adds (candidates: "
            f"{[infos[n].name for n in tiers[-1]][:8]}): every value the output needs is either before all others or "
            "cheap to compute. Check list_taps(model, example_inputs): a shortcut needs costly layers between two feature maps."
        )
    modules = dict(captured.gm.named_modules())
    unshuffled = [p for p in pairs if not feeds_depth_to_space(p[2], modules)]
    pairs = unshuffled or pairs  # (a decoder tap of sub-pixel phases only where nothing else is left: see feeds_depth_to_space)
    pairs.sort(key=lambda p: (-p[0], graph.index[p[2]], graph.index[p[1]]))
    proxy = _Proxy(captured.gm, _frame_pairs(inputs, frames), output)
    frame_free = {e for _, e, _ in pairs if not proxy.reads_frames(e)} if proxy.every_input_moves else set()
    if frame_free and len(frame_free) == len({e for _, e, _ in pairs}):
        raise EmptyCutError(
            f"no encoder tap of {type(model).__name__} among the candidates changes with the frames "
            f"({[infos[n].name for n in frame_free][:8]}): a block would see nothing of a shortcut frame. Check "
            "list_taps(model, example_inputs) and pass frames= with frames that differ."
        )
    pairs = [p for p in pairs if p[1] not in frame_free]  # (their shortcut frames would repeat one output)
    total = graph.total
    layouts = ("half", "full") if resolution == AUTO else (resolution,)
    # each pair's bound: its score with a free block and the lowest difficulty of the layouts it may get
    from tqdm.auto import tqdm

    with tqdm(pairs[:MAX_MEASURED], desc="suggest_taps: measuring cuts", unit="pair", delay=PROGRESS_DELAY_S,
              disable=not progress, leave=False, dynamic_ncols=True) as bar:
        measured = [(s, e, dec, {r: proxy.difficulty(e, dec, r == "half") for r in layouts}) for s, e, dec in bar]
    scored = sorted(((_score(total, total - s, min(d.values())), d, s, e, dec) for s, e, dec, d in measured), key=lambda t: -t[0])
    names = {n: _tap_name(captured, n, infos[n]) for n in nodes}
    def suggestion(cut: Any, difficulties: dict[str, float], enc: fx.Node, dec: fx.Node) -> TapSuggestion | None:
        def macs(layout: str, w: int) -> int:
            return _block_macs(layout, w, cut.enc.shape, cut.dec.shape)

        if resolution == AUTO:
            layout, width, block = auto_layout(cut.enc.shape, cut.dec.shape, cut.skipped_macs, macs)
        else:
            layout = resolution
            width, block = auto_width(cut.enc.shape, cut.dec.shape, cut.skipped_macs, functools.partial(macs, layout))
        if block >= cut.skipped_macs:
            return None
        difficulty = difficulties[layout]
        return TapSuggestion(
            names[enc], names[dec], cut.enc, cut.dec, width, cut.skipped_macs, block, total, difficulty,
            _score(total, total - cut.skipped_macs + block, difficulty), layout,
        )

    found: list[TapSuggestion] = []
    blind: list[TapSuggestion] = []  # cuts whose shortcut frames would not read some input: offered only if no other fits
    ignores: dict[tuple[str, str], tuple[str, ...]] = {}  # per suggestion's taps, the inputs its shortcut frames would not read
    chain = _chains(graph)
    best: dict[tuple[fx.Node, fx.Node], TapSuggestion] = {}  # the best variant of each cut between two chains
    for bound, difficulties, _, enc, dec in scored:
        if len(found) >= top and bound <= found[top - 1].score:
            break  # the score is at most the bound: no later pair can enter the top
        try:
            cut = resolve_cut(captured, names[enc], names[dec])
        except (TapOrderError, TapShapeError, EmptyCutError):
            continue
        measured = dec
        # a sum one of whose addends shortcut frames compute anyway (a residual around the cut): the decoder tap on
        # the other addend skips the same work, and the tail then adds the current frame's exactly; then the tap at
        # the start of its chain: the conv's output, before the norm and activation that pass it on (the tail's
        # norm then normalises the block's prediction; RESULTS.md, "Automatic taps")
        for step in (lambda: _skipped_addend(dec, cut.skipped), lambda: chain[dec]):  # (each on the tap the last left)
            moved = step()
            if moved is not None and moved is not dec and moved in names and moved is not enc:
                try:
                    at = resolve_cut(captured, names[enc], names[moved])
                except (TapOrderError, TapShapeError, EmptyCutError):
                    continue
                if at.ignored_inputs == cut.ignored_inputs:
                    cut, dec = at, moved
        if dec is not measured:
            difficulties = {r: proxy.difficulty(enc, dec, r == "half") for r in layouts}
        made = suggestion(cut, difficulties, enc, dec)
        if made is None:
            continue
        kept = blind if cut.ignored_inputs else found
        ignores[made.enc_layer, made.dec_layer] = cut.ignored_inputs
        variant = best.get((chain[enc], chain[dec]))
        if variant is not None:
            if variant.score >= made.score:
                continue
            (blind if variant in blind else found).remove(variant)
        best[chain[enc], chain[dec]] = made
        kept.append(made)
        kept.sort(key=lambda s: -s.score)
    if found and blind and blind[0].score > found[0].score:
        left = blind[0]
        warn_caller(
            f"suggest_taps(): a better-scoring cut, {left.enc_layer!r} -> {left.dec_layer!r} ({left.saved_fraction:.0%} of "
            f"the MACs saved, against {found[0].saved_fraction:.0%} for the first suggestion), is left out: its shortcut "
            f"frames would not read input(s) {list(ignores[left.enc_layer, left.dec_layer])} (every path from them to the output runs through "
            "the part it skips), so between keyframes the output could not follow them. If they are constant for a "
            "stream (a conditioning), hold them in a wrapper module (as buffers it passes to the generator: concrete_args= "
            "fixes non-tensor arguments only), and ask again."
        )
    if not found:
        found = sorted(blind, key=lambda s: -s.score)
    if not found:
        raise EmptyCutError(
            f"no pair of taps of {type(model).__name__} makes a shortcut frame cheaper than the teacher: the block "
            "would cost at least what each cut skips. Use larger frames, or a generator with costlier layers between its feature maps."
        )
    if all(s.difficulty >= 1.0 for s in found):
        warn_caller(
            "suggest_taps(): every cut measured the highest difficulty (1.0: the linearised block does no better than "
            "repeating the keyframe on these frames), so the suggestions are ranked by the MACs they save alone. "
            "Pass frames= with a real clip; a generator that quantises its features (a VQ model) may defeat the proxy."
        )
    elif all(s.difficulty <= LOW_DIFFICULTY for s in found):
        warn_caller(
            f"suggest_taps(): every cut measured a difficulty of at most {LOW_DIFFICULTY:g}: the output changes between "
            "the frames mostly through what no cut skips (a skip from the input, out = x + f(x), or from early layers), so "
            "the proxy tells the cuts apart by little and the ranking is close to one by the MACs they save (or, for a "
            "generator of several outputs, through outputs no cut skips: name the image with output=). Pass frames= "
            "with a real clip, "
            "and compare the first suggestions by distilling each briefly (evaluate() after distill())."
        )
    return TapSuggestions(found[:top])
