"""Splitting a batch of streams and merging it back (``core.streams``): against a naive per-stream reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shortcutify import StreamSplitError
from shortcutify.core.streams import (
    batched_leaves,
    check_streams,
    merge_streams,
    per_stream,
    scatter_streams,
    streams_of,
    take_streams,
)


@st.composite
def split(draw):
    """A batch size, a split of its streams into two non-empty sub-batches, and a leaf's trailing shape."""
    streams = draw(st.integers(2, 6))
    order = draw(st.permutations(range(streams)))
    k = draw(st.integers(1, streams - 1))
    trailing = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    return streams, torch.tensor(sorted(order[:k])), torch.tensor(sorted(order[k:])), trailing


@settings(max_examples=40, deadline=None)
@given(split())
def test_take_then_scatter_gives_the_batch_back(case):
    streams, a, b, trailing = case
    out = {"image": torch.randn(streams, *trailing), "extra": [torch.randn(streams, 2)], "name": "x"}
    parts = [(a, take_streams(out, a, streams)), (b, take_streams(out, b, streams))]
    merged = scatter_streams(parts, streams)
    assert torch.equal(merged["image"], out["image"]) and torch.equal(merged["extra"][0], out["extra"][0])
    assert merged["name"] == "x"


@settings(max_examples=40, deadline=None)
@given(split())
def test_scatter_places_each_row_by_its_stream(case):
    streams, a, b, trailing = case
    rows_a, rows_b = torch.randn(len(a), *trailing), torch.randn(len(b), *trailing)
    merged = scatter_streams([(a, rows_a), (b, rows_b)], streams)
    for i, s in enumerate(a.tolist()):
        assert torch.equal(merged[s], rows_a[i])
    for i, s in enumerate(b.tolist()):
        assert torch.equal(merged[s], rows_b[i])


def test_take_leaves_tensors_not_batched_by_stream_alone():
    scale, frames = torch.tensor(2.0), torch.randn(4, 3)
    taken = take_streams((frames, scale, torch.randn(2, 3)), torch.tensor([1, 3]), 4)
    assert torch.equal(taken[0], frames[[1, 3]]) and taken[1] is scale and taken[2].shape == (2, 3)


def test_merge_replaces_the_given_streams_in_the_old_dtype():
    old = torch.zeros(4, 2)
    new = torch.ones(2, 2, dtype=torch.float64)
    merged = merge_streams(old, torch.tensor([0, 2]), new)
    assert merged.dtype == torch.float32 and merged.tolist() == [[1, 1], [0, 0], [1, 1], [0, 0]]
    assert old.sum() == 0  # not in place


def test_outputs_not_batched_by_stream_cannot_be_merged():
    a, b = torch.tensor([0]), torch.tensor([1, 2])
    with pytest.raises(StreamSplitError, match="not batched by stream"):
        scatter_streams([(a, torch.randn(())), (b, torch.randn(()))], 3)
    with pytest.raises(StreamSplitError, match="different structures"):
        scatter_streams([(a, (torch.randn(1),)), (b, [torch.randn(2), torch.randn(2)])], 3)
    with pytest.raises(StreamSplitError, match="non-tensor output differs"):
        scatter_streams([(a, (torch.randn(1), "x")), (b, (torch.randn(2), "y"))], 3)
    # a whole batch's output said which leaves were batched: a per-sub-batch leaf of one row is not taken for one
    batched = batched_leaves((torch.randn(3, 2), torch.randn(1)), 3)
    assert batched == (True, False)
    with pytest.raises(StreamSplitError, match="not batched by stream"):
        scatter_streams([(torch.tensor([0]), (torch.randn(1, 2), torch.randn(1))), (torch.tensor([1, 2]), (torch.randn(2, 2), torch.randn(1)))], 3, batched)


def test_inputs_must_be_batched_by_stream_to_split():
    check_streams((torch.randn(3, 1, 4, 4),), {"mask": torch.randn(3, 4, 4)}, 3)
    with pytest.raises(StreamSplitError, match=r"shape \(1, 4, 4\)"):
        check_streams((torch.randn(3, 1, 4, 4),), {"mask": torch.randn(1, 4, 4)}, 3)
    with pytest.raises(StreamSplitError):
        check_streams((torch.randn(3, 1, 4, 4), torch.tensor(0.5)), {}, 3)


def test_streams_of_folded_taps_and_per_stream_values():
    # a generator of frame stacks [B, C, D, H, W] whose taps fold D into the batch: 2 streams, 8 tap rows
    assert streams_of((torch.randn(2, 3, 4, 8, 8),), rows=8) == 2
    assert streams_of((torch.randn(2, 3, 8, 8),), rows=2) == 2
    values = torch.tensor([1.0, 5.0, 2.0, 0.0])
    assert per_stream(values, 4, torch.max) is values
    folded = per_stream(values, 2, torch.max)
    assert folded.tolist() == [5.0, 5.0]
    folded[0] = 0  # each stream's value is its own
    assert folded.tolist() == [0.0, 5.0]
