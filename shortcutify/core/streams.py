"""Splitting a batch of streams and merging it back: a batch of frames is a batch of independent streams,
and where a keyframe policy keyframes some streams only, the teacher and the shortcut each run on a
sub-batch whose outputs are merged per stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.utils._pytree import keystr, tree_flatten, tree_flatten_with_path, tree_unflatten

from ..errors import StreamSplitError
from .checks import frames_batch, shapes_of

__all__ = ["streams_of", "per_stream", "take_streams", "check_streams", "batched_leaves", "scatter_streams", "merge_streams"]


def streams_of(args: tuple, rows: int) -> int:
    """How many streams a call holds: the taps' batch size, or the frames' (:func:`~shortcutify.core.checks.frames_batch`)
    where the taps hold several rows per stream (a generator of frame stacks that folds the frames into its batch)."""
    batch = frames_batch(shapes_of(args))
    if 0 < batch < rows and rows % batch == 0:
        return batch
    return rows


def per_stream(values: Tensor, streams: int, reduce: Callable[[Tensor], Tensor]) -> Tensor:
    """Per-tap-row ``values [R]`` as ``[streams]``: as they are where ``R == streams``; else ``reduce``
    over all rows, for every stream (the streams of folded taps take keyframes together)."""
    if values.shape[0] == streams:
        return values
    return reduce(values).reshape(1).expand(streams).clone()


def take_streams(tree: Any, index: Tensor, streams: int) -> Any:
    """The entries ``index`` of every tensor leaf with ``streams`` entries in dimension 0 (others as they are)."""
    leaves, spec = tree_flatten(tree)
    out = [
        v.index_select(0, index.to(v.device)) if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == streams else v
        for v in leaves
    ]
    return tree_unflatten(out, spec)


def check_streams(args: tuple, kwargs: dict, streams: int) -> None:
    """Per-stream keyframes split the inputs by stream: every tensor input must be ``[B, ...]``."""
    for v in tree_flatten((args, kwargs))[0]:
        if isinstance(v, Tensor) and (v.dim() == 0 or v.shape[0] != streams):
            raise StreamSplitError(
                f"the keyframe policy chose a keyframe for some of the {streams} streams only, which runs the teacher "
                f"on those streams' inputs alone, but an input tensor of shape {tuple(v.shape)} is not batched by "
                f"stream (dimension 0 is not {streams}). Pass every tensor input as [B, ...], or run the streams "
                "with one module each."
            )


def batched_leaves(out: Any, streams: int) -> tuple[bool, ...] | None:
    """Per leaf of a whole batch's output, whether it is batched by stream (``None`` for one stream: unknown)."""
    if streams < 2:
        return None
    return tuple(isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == streams for v in tree_flatten(out)[0])


def scatter_streams(parts: list[tuple[Tensor, Any]], streams: int, batched: tuple[bool, ...] | None = None) -> Any:
    """One output for all streams from per-sub-batch outputs ``(stream indices, output)``; ``batched``: which
    leaves a whole batch's output had batched by stream (a leaf of one entry per sub-batch of one stream is not
    told apart from a batched one otherwise)."""
    flat = [tree_flatten(out) for _, out in parts]
    spec = flat[0][1]
    if any(f[1] != spec for f in flat[1:]):
        raise StreamSplitError(
            "the teacher's and the shortcut's outputs have different structures, so per-stream results cannot be "
            f"merged: {spec} vs {flat[1][1]}"
        )
    merged = []
    for i, leaf in enumerate(flat[0][0]):
        values = [f[0][i] for f in flat]
        if not isinstance(leaf, Tensor):
            if any(v != leaf for v in values[1:]):
                raise StreamSplitError(f"a non-tensor output differs between sub-batches ({values!r}); it cannot be merged per stream")
            merged.append(leaf)
            continue
        unbatched = batched is not None and i < len(batched) and not batched[i]
        if unbatched or any(
            v.dim() == 0 or v.shape[0] != len(idx) or v.shape[1:] != leaf.shape[1:] or v.dtype != leaf.dtype
            for v, (idx, _) in zip(values, parts)
        ):
            where = keystr(tree_flatten_with_path(parts[0][1])[0][i][0]) or "(the whole output)"
            raise StreamSplitError(
                f"the keyframe policy chose a keyframe for some of the {streams} streams only, so the teacher and the "
                f"shortcut each ran on some streams, but the output at {where} (shapes {[tuple(v.shape) for v in values]} "
                "in the two sub-batches) is not batched by stream and cannot be merged. Return every tensor output as "
                "[B, ...] (e.g. a per-frame statistic keeps its batch dimension), or run the streams with one module each."
            )
        out = leaf.new_empty((streams, *leaf.shape[1:]))
        for v, (idx, _) in zip(values, parts):
            out.index_copy_(0, idx.to(out.device), v)
        merged.append(out)
    return tree_unflatten(merged, spec)


def merge_streams(old: Tensor, index: Tensor, new: Tensor) -> Tensor:
    return old.index_copy(0, index.to(old.device), new.to(old.dtype))
