"""Clips of consecutive frames and the (reference, current) training pairs drawn from them.

A *clip* is a tensor ``[T, C, H, W]`` of consecutive frames, or, for a generator with
several ``forward`` arguments, a tuple of tensors, one per argument, with the same ``T``:
frames ``[T, C, H, W]`` (at least one) and any other per-frame input ``[T, ...]``: a map
``[T, H, W]`` of the frames' size (a mask) is cropped and flipped with them; the others (a style
vector ``[T, D]``, a diffusion timestep ``[T]``, 1×1 codes) are left alone. For a generator of 5-D
inputs ``[B, C, D, H, W]`` (``D`` frames through 3-D convolutions) the frames are ``[T, C, D, H, W]``;
for one of channels-last inputs ``[B, H, W, C]``, ``[T, H, W, C]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..core.checks import channels_last_inputs, check_like_example

#: the ranks of a clip's frames: ``[T, C, H, W]``, or ``[T, C, D, H, W]`` for a generator of 5-D inputs (a stack of
#: ``D`` frames through 3-D convolutions); crops and flips act on the last two dimensions
FRAME_DIMS = (4, 5)

__all__ = ["FRAME_DIMS", "as_clip", "each_clip", "ClipSource", "check_clips", "check_inputs", "to_inputs", "refuse_single_clip", "Pairs", "sample_pairs"]


def _holds_frames(rank: int, j: int, example: Sequence[object] | None) -> bool:
    """Whether a clip tensor of ``rank`` dimensions for the generator's input ``j`` holds its frames: ``[T, C, H, W]``
    (or a stack ``[T, C, D, H, W]``), or maps ``[T, H, W]`` where that input is a map ``[B, H, W]`` (a label map of a
    semantic-map-to-video generator, whose frames are its maps)."""
    if rank in FRAME_DIMS:
        return True
    given = example[j] if example is not None and j < len(example) else None
    return rank == 3 and isinstance(given, Tensor) and given.dim() == 3


def as_clip(clip: Any, index: int | None = None, example: Sequence[object] | None = None) -> tuple[Tensor, ...]:
    """Normalise a clip to a tuple of ``[T, ...]`` tensors with a common ``T >= 1``, at least one of them
    frames ``[T, C, H, W]`` (or, where ``example``, the generator's example inputs, holds a map ``[B, H, W]``
    for it, maps ``[T, H, W]``)."""
    where = "" if index is None else f" (clip {index})"
    parts = (clip,) if isinstance(clip, Tensor) else tuple(clip) if isinstance(clip, (tuple, list)) else None
    if not parts or not all(isinstance(p, Tensor) for p in parts):
        held = f" holding {', '.join(sorted({type(p).__name__ for p in parts}))}" if parts else ""
        numpy = " (a numpy array: torch.from_numpy(clip), frames [T, H, W, C] moved with .permute(0, 3, 1, 2))" if (
            type(clip).__module__ == "numpy" or (parts and any(type(p).__module__ == "numpy" for p in parts))
        ) else ""
        raise TypeError(
            f"a clip must be a tensor [T, C, H, W] or a tuple of such tensors (one per forward() argument), "
            f"got {type(clip).__name__}{held}{where}{numpy}"
        )
    stack = "; a clip stacks consecutive frames [C, H, W] into one tensor: torch.stack(frames)"
    for p in parts:
        if p.dim() < 1 or (len(parts) == 1 and not _holds_frames(p.dim(), 0, example)):
            raise ValueError(
                f"a clip tensor must be frames [T, C, H, W] (or, beside frames, a per-frame input [T, ...]), got shape "
                f"{tuple(p.shape)}{where}" + (stack if p.dim() == 3 else "")
            )
    if not any(_holds_frames(p.dim(), j, example) for j, p in enumerate(parts)):
        frames = all(p.dim() == 3 for p in parts) and len({p.shape for p in parts}) == 1
        raise ValueError(
            f"a clip needs frames [T, C, H, W], got tensors of shapes {[tuple(p.shape) for p in parts]}{where}"
            + (f" (frames listed one by one?){stack}" if frames else "")
        )
    lengths = {p.shape[0] for p in parts}
    if len(lengths) != 1:
        raise ValueError(f"the tensors of a multi-input clip must have the same number of frames, got {sorted(lengths)}{where}")
    return parts


def check_inputs(clip: tuple[Tensor, ...], example: tuple[object, ...], index: int | None = None) -> None:
    """Check that a clip's tensors can be the generator's positional inputs: one per example input given to
    :func:`~shortcutify.shortcutify`, in their order, each with the example's channels and floating where
    the example's is.

    Floating frames of another floating dtype are fine (:func:`to_inputs` converts them); frames of an
    integer dtype (``uint8`` video) for a floating input are refused, because their scaling to the
    generator's value range (``[-1, 1]``, ``[0, 1]``, normalised, ...) cannot be guessed.

    Raises:
        ValueError: the clip has another number of tensors than the example has inputs.
        InputMismatchError: a tensor has another number of channels (a ``ValueError``).
        InputTypeError: a clip tensor is not floating where the example input is (a ``TypeError``).
    """
    where = "" if index is None else f" (clip {index})"
    if len(clip) != len(example):
        raise ValueError(
            f"a clip holds {len(clip)} tensor(s){where}, but the generator was wrapped with {len(example)} example "
            "input(s): give one [T, ...] tensor per example input (frames [T, C, H, W]), in their order (a tuple of tensors for "
            "several inputs)"
        )
    for j, (part, ex) in enumerate(zip(clip, example)):
        check_like_example(part, ex, f"clip tensor {j}{where}", j, lead="T")


def to_inputs(frames: tuple[Tensor, ...], device: torch.device, dtype: torch.dtype, non_blocking: bool = False) -> tuple[Tensor, ...]:
    """Frames as a module's inputs: on ``device``, floating frames in the module's floating ``dtype``
    (other tensors keep theirs), detached (no gradient flows back into the caller's clips)."""
    return tuple(f.detach().to(device=device, dtype=dtype if f.is_floating_point() else f.dtype, non_blocking=non_blocking) for f in frames)


def refuse_single_clip(clips: object, name: str = "clips") -> None:
    """Raise ``TypeError`` for a bare clip tensor, or anything that is not a collection, given where a
    collection of clips is expected (``name``: the argument, for the message)."""
    if isinstance(clips, Tensor) and clips.dim() != 5:
        raise TypeError(
            f"{name} must be a collection of clips (a list of [T, C, H, W] tensors, or one tensor [N, T, C, H, W] of N "
            f"clips), got a tensor of shape {list(clips.shape)}"
            + ("; wrap a single clip [T, C, H, W] in a list: [clip]" if clips.dim() == 4 else "")
        )
    if isinstance(clips, Mapping):
        raise TypeError(
            f"{name} is a {type(clips).__name__}: give the clips as a list (list(clips.values()) for a dict of them), a "
            "Dataset, a DataLoader or any iterable of clips"
        )
    if isinstance(clips, (str, bytes)) or not (isinstance(clips, Iterable) or hasattr(clips, "__getitem__")):
        raise TypeError(
            f"{name} must be a collection of clips [T, C, H, W] (a list, a Dataset, a DataLoader or any iterable), "
            f"got {type(clips).__name__}"
        )


def each_clip(clips: Iterable[Any], example: Sequence[object] | None = None) -> Iterator[Any]:
    """The clips of ``clips`` one at a time, as read: a ``DataLoader``'s batches ``[N, T, C, H, W]`` (or tuples of
    them; ``[N, T, H, W]`` for an input that ``example``, the generator's example inputs, holds as a map
    ``[B, H, W]``) split into their ``N`` clips; any other iterable as it is.

    Raises:
        ValueError: a batch of a ``DataLoader`` is not a batch of clips.
    """
    if not isinstance(clips, DataLoader) or clips.batch_sampler is None:  # (batch_size=None: each item is a clip)
        yield from clips
        return
    for batch in clips:
        parts = (batch,) if isinstance(batch, Tensor) else tuple(batch)
        if any(not isinstance(p, Tensor) or p.dim() < 2 for p in parts) or not any(
            _holds_frames(p.dim() - 1, j, example) for j, p in enumerate(parts)
        ):
            raise ValueError(
                "a DataLoader of clips must yield batches [N, T, C, H, W] (or [N, T, C, D, H, W] of frame stacks, or "
                "tuples of them and [N, T, ...]); a loader of unbatched clips: DataLoader(..., batch_size=None)"
            )
        for i in range(parts[0].shape[0]):
            yield tuple(p[i] for p in parts) if len(parts) > 1 else parts[0][i]


def _counted(clips: Iterator[Any], progress: bool) -> Iterator[Any]:
    """``clips``, counted by a progress bar while they are read when ``progress``."""
    if not progress:
        yield from clips
        return
    from tqdm.auto import tqdm

    with tqdm(desc="reading clips (an iterable is read once, into memory)", unit="clip", leave=False) as bar:
        for clip in clips:
            bar.update(1)
            yield clip


class ClipSource:
    """Random access to clips from a list, a ``Dataset``, a ``DataLoader`` or any iterable.

    A ``DataLoader`` (whose batches are ``[N, T, C, H, W]`` or tuples of them; with
    ``batch_size=None``, clips) and plain iterables are read once, into memory; pass a ``Dataset``
    (``__len__`` and ``__getitem__``) to keep large data on disk. A tensor ``[N, T, C, H, W]`` holds
    ``N`` clips. ``progress``: count the clips read with a progress bar. ``example``: the generator's example
    inputs, for clips of maps ``[T, H, W]`` (:func:`as_clip`).
    """

    def __init__(
        self, clips: Iterable[Any] | Sequence[Any], progress: bool = False, example: Sequence[object] | None = None
    ) -> None:
        refuse_single_clip(clips)
        self.example = example
        if hasattr(clips, "__getitem__") and hasattr(clips, "__len__") and not isinstance(clips, DataLoader):
            self.items: Any = clips
        else:  # read once: with progress, a bar counts the clips (an endless iterable would otherwise hang unseen)
            self.items = list(_counted(each_clip(clips, example), progress))
        if len(self.items) == 0:
            raise ValueError("no clips given")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        try:
            item = self.items[i]
        except IndexError as exc:  # (a Dataset whose __len__ promises more items than __getitem__ has)
            raise IndexError(
                f"clip {i} could not be read ({exc}), though the clips' len() is {len(self.items)}: a Dataset's __len__ "
                "must count the items its __getitem__ returns"
            ) from exc
        return as_clip(item, i, self.example)


def _channels_first(clip: tuple[Tensor, ...], channels_last: Sequence[bool]) -> tuple[Tensor, ...]:
    """The clip with its channels-last frames ``[T, H, W, C]`` (``channels_last[j]`` for input ``j``) viewed as
    ``[T, C, H, W]``, so that crops and flips act on their height and width."""
    return tuple(p.movedim(-1, -3) if j < len(channels_last) and channels_last[j] and p.dim() == 4 else p for j, p in enumerate(clip))


def _channels_back(frames: tuple[Tensor, ...], channels_last: Sequence[bool]) -> tuple[Tensor, ...]:
    """:func:`_channels_first` undone on the frames ``[C, H, W]`` of one pair."""
    return tuple(p.movedim(-3, -1) if j < len(channels_last) and channels_last[j] and p.dim() == 3 else p for j, p in enumerate(frames))


def _sizes(clip: tuple[Tensor, ...]) -> str:
    return " + ".join(f"{p.shape[-2]}x{p.shape[-1]} ({p.shape[1]} channels)" if p.dim() in FRAME_DIMS else f"{list(p.shape[1:])}" for p in clip)


def _frame_size(clip: tuple[Tensor, ...]) -> tuple[int, int]:
    """``(H, W)`` of the clip's first frames tensor larger than 1×1 (crops are in its pixels).

    Where the clip holds no frames, its first map ``[T, H, W]`` (a label map, see :func:`as_clip`) gives the size.

    Raises:
        ValueError: the clip holds no frames ``[T, C, H, W]`` nor maps.
    """
    frames = [(int(p.shape[-2]), int(p.shape[-1])) for p in clip if p.dim() in FRAME_DIMS]
    frames = frames or [(int(p.shape[-2]), int(p.shape[-1])) for p in clip if p.dim() == 3]
    if not frames:
        raise ValueError(f"a clip needs frames [T, C, H, W], got tensors of shapes {[tuple(p.shape) for p in clip]}")
    return next((hw for hw in frames if hw != (1, 1)), frames[0])


def _spatial(p: Tensor, size: tuple[int, int]) -> bool:
    """Whether crops and flips apply to the clip tensor ``p``: frames ``[T, C, H, W]`` larger than 1×1, or a
    per-frame map ``[T, H, W]`` of the frames' size ``size`` (a mask)."""
    if p.dim() in FRAME_DIMS:
        return (int(p.shape[-2]), int(p.shape[-1])) != (1, 1)
    return p.dim() == 3 and (int(p.shape[-2]), int(p.shape[-1])) == size


def crop_steps(clip: tuple[Tensor, ...]) -> tuple[int, int]:
    """The grid, in the first frames' pixels, that a crop's corner and size must lie on so that every
    frames input of ``clip`` is cropped to the same region in whole pixels (``(1, 1)`` when they share one
    size; inputs of 1×1 pixels and per-frame inputs other than frames ``[T, C, H, W]`` and masks
    ``[T, H, W]`` of the frames' size are not cropped and do not count).

    An input of another size than the first is cropped at the first input's box scaled by its size
    ratio: for a first input of height ``H`` and another of height ``h``, a corner or size ``y`` must
    make ``y * h / H`` whole, so ``y`` must be a multiple of ``H / gcd(H, h)``.
    """
    h0, w0 = _frame_size(clip)
    sy = sx = 1
    for p in clip:
        h, w = p.shape[-2:]
        if _spatial(p, (h0, w0)):
            sy, sx = math.lcm(sy, h0 // math.gcd(h0, h)), math.lcm(sx, w0 // math.gcd(w0, w))
    return sy, sx


def _cut(p: Tensor, first: tuple[int, int], box: tuple[int, int, int, int]) -> Tensor:
    """``p`` cropped to ``box`` (top, left, height, width in the first input's pixels ``first``), scaled to its size."""
    h, w = p.shape[-2:]
    if not _spatial(p, first):
        return p
    top, left, ch, cw = (box[0] * h) // first[0], (box[1] * w) // first[1], (box[2] * h) // first[0], (box[3] * w) // first[1]
    return p[..., top : top + ch, left : left + cw]


def check_clips(source: ClipSource, crop: tuple[int, int] | None, example: tuple[object, ...] | None = None) -> int:
    """Index every clip once, check that training pairs can be drawn from all of them, and return the
    longest clip's number of frames (pairs are at most that minus one frames apart).

    Each clip needs at least 2 frames; without ``crop`` all frames must have one size (pairs
    of several clips share a batch), with ``crop`` every clip must be at least ``crop``; with
    ``example`` (the generator's example inputs) every clip must fit them (:func:`check_inputs`), and
    the clips of inputs that look channels-last there are measured as ``[T, H, W, C]``.

    Raises:
        ValueError: naming the first clip that does not fit.
        TypeError: a clip's frames are not floating where the generator's inputs are.
    """
    first: tuple[tuple[int, ...], ...] | None = None
    described: list[str] = []  # the frame sizes of clip 0 and of the first clip that differs
    mismatch: int | None = None
    heights: list[int] = []
    widths: list[int] = []
    longest = 0
    layout = () if example is None else channels_last_inputs(example)
    for i in range(len(source)):
        clip = source[i]
        if example is not None:
            check_inputs(clip, example, i)
        clip = _channels_first(clip, layout)
        t = clip[0].shape[0]
        if t < 2:
            raise ValueError(f"clip {i} has {t} frame(s); training pairs need clips of at least 2 frames")
        longest = max(longest, int(t))
        h, w = _frame_size(clip)
        if crop is not None and (crop[0] > h or crop[1] > w):
            raise ValueError(f"crop {crop} is larger than the frames of clip {i} ({h}x{w}); pass a smaller crop")
        if crop is not None and (steps := crop_steps(clip)) != (1, 1) and (crop[0] % steps[0] or crop[1] % steps[1]):
            raise ValueError(
                f"clip {i} has inputs of different sizes ({_sizes(clip)}); each is cropped to the same region, scaled to "
                f"its size, which needs a crop whose height is a multiple of {steps[0]} and width a multiple of "
                f"{steps[1]} (in the first frames' pixels), got crop {crop}"
            )
        heights.append(h)
        widths.append(w)
        shapes = tuple(tuple(p.shape[1:]) for p in clip)
        if first is None:
            first, described = shapes, [_sizes(clip)]
        elif shapes != first and mismatch is None:
            mismatch = i
            described.append(_sizes(clip))
    if crop is None and mismatch is not None:
        raise ValueError(
            f"clip {mismatch} has frames of {described[1]}, clip 0 of {described[0]}: clips of "
            f"different frame sizes cannot share a batch; pass crop=(h, w) with h <= {min(heights)}, "
            f"w <= {min(widths)} (the smallest frames), or resize the clips"
        )
    return longest


class Pairs(NamedTuple):
    """One batch of training pairs (what :func:`sample_pairs` draws).

    Attributes:
        reference, current: one ``[n, ...]`` tensor per forward argument (frames ``[n, C, H, W]``).
        origins: per row, ``(clip index, reference frame, current frame)``.
    """

    reference: tuple[Tensor, ...]
    current: tuple[Tensor, ...]
    origins: list[tuple[int, int, int]]


def sample_pairs(
    source: ClipSource,
    n: int,
    max_gap: int,
    generator: torch.Generator,
    *,
    crop: tuple[int, int] | None = None,
    flip: bool = False,
    channels_last: Sequence[bool] = (),
) -> Pairs:
    """Draw ``n`` (reference, current) pairs, the current frame 1..``max_gap`` frames later.

    Returns:
        :class:`Pairs`: the reference and current inputs, each a tuple (one per forward
        argument) of ``[n, ...]`` tensors (frames ``[n, C, H, W]``), and where each row came from. With
        ``crop=(h, w)`` (in the first frames' pixels) both frames of a pair share one random
        crop, and every input is cropped to the same region scaled to its size
        (:func:`crop_steps`); with ``flip`` they share one random horizontal flip. Inputs ``j`` with
        ``channels_last[j]`` (:func:`~shortcutify.core.checks.channels_last_inputs`) hold frames ``[T, H, W, C]``:
        cropped and flipped in their height and width, returned as ``[n, h, w, C]``.
    """
    refs: list[tuple[Tensor, ...]] = []
    curs: list[tuple[Tensor, ...]] = []
    origins: list[tuple[int, int, int]] = []
    for _ in range(n):
        ci = int(torch.randint(len(source), (1,), generator=generator))
        clip = _channels_first(source[ci], channels_last)
        t = clip[0].shape[0]
        if t < 2:
            raise ValueError(f"clip {ci} has {t} frame(s); training pairs need clips of at least 2 frames")
        gap = int(torch.randint(1, min(max_gap, t - 1) + 1, (1,), generator=generator))
        r = int(torch.randint(0, t - gap, (1,), generator=generator))
        ref, cur = tuple(p[r : r + 1] for p in clip), tuple(p[r + gap : r + gap + 1] for p in clip)  # [1, ...] each
        if crop is not None:
            h, w = _frame_size(clip)
            ch, cw = crop
            if ch > h or cw > w:
                raise ValueError(f"crop {crop} is larger than the frames of clip {ci} ({h}x{w})")
            sy, sx = crop_steps(clip)
            if ch % sy or cw % sx:
                raise ValueError(f"crop {crop} does not fit the inputs of clip {ci} ({_sizes(clip)}): see check_clips")
            top = sy * int(torch.randint(0, (h - ch) // sy + 1, (1,), generator=generator))
            left = sx * int(torch.randint(0, (w - cw) // sx + 1, (1,), generator=generator))
            ref = tuple(_cut(p, (h, w), (top, left, ch, cw)) for p in ref)
            cur = tuple(_cut(p, (h, w), (top, left, ch, cw)) for p in cur)
        if flip and bool(torch.rand((), generator=generator) < 0.5):
            hw = _frame_size(ref)  # (after the crop)
            ref = tuple(p.flip(-1) if _spatial(p, hw) else p for p in ref)  # (frames and masks only)
            cur = tuple(p.flip(-1) if _spatial(p, hw) else p for p in cur)
        ref, cur = _channels_back(tuple(p[0] for p in ref), channels_last), _channels_back(tuple(p[0] for p in cur), channels_last)
        refs.append(ref)
        curs.append(cur)
        origins.append((ci, r, r + gap))
    try:
        ref_batch = tuple(torch.stack([r[k] for r in refs]) for k in range(len(refs[0])))
        cur_batch = tuple(torch.stack([c[k] for c in curs]) for k in range(len(curs[0])))
    except RuntimeError as exc:
        raise ValueError(f"clips of different frame sizes cannot share a batch; pass crop=(h, w): {exc}") from exc
    return Pairs(ref_batch, cur_batch, origins)
