"""Argument checks shared by the core and training layers."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten

from ..errors import InputMismatchError, InputTypeError, TapShapeError

__all__ = ["is_count", "is_interval", "is_real", "check_like_example", "looks_channels_last", "is_channels_last_shape", "channels_last_inputs", "refuse_untensored", "check_tap_rows", "frames_batch", "frame_aspect", "off_frame_aspect", "ASPECT_FACTOR", "shapes_of", "tap_looks_channels_last", "weights_dtype", "refuse_valueless", "check_flag", "MAX_COUNT", "MODED_TYPES", "SCALING_HINT"]

#: how integer video is brought to a generator's floating range (the range cannot be guessed)
SCALING_HINT = "frames.float() / 127.5 - 1 for [-1, 1], frames.float() / 255 for [0, 1]"


#: torch.nn modules whose forward depends on their training mode (batch statistics, dropout)
MODED_TYPES = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._NormBase, torch.nn.RNNBase, torch.nn.MultiheadAttention)


def weights_dtype(module: Any) -> torch.dtype | None:
    """The dtype a block for ``module`` computes in: its first parameter's, where floating (``None`` otherwise:
    then the inputs'); a tap of another dtype is refused by ``shortcutify()`` and not suggested."""
    first = next(iter(module.parameters()), None)
    return first.dtype if first is not None and first.is_floating_point() else None


#: the largest count or interval taken (an int64 holds it, with room for one more frame: counters are int64 tensors)
MAX_COUNT = 2**63 - 2


def is_count(value: Any) -> bool:
    """Whether ``value`` is an integer from 1 to :data:`MAX_COUNT` of any integer type (``numpy.int64`` too; not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and 1 <= value <= MAX_COUNT


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a ``bool``: a ``bool`` (``numpy.bool_`` too) or the integer 0 or 1.

    Raises:
        TypeError: anything else (a string such as ``"no"`` would otherwise count as true), naming ``name``.
    """
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")  # (NumPy 2 and 1)
    if isinstance(value, bool) or numpy_bool or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def is_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number of any real type (``numpy.float32`` too; not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def is_interval(value: Any) -> bool:
    """Whether ``value`` is a real number >= 1 (a mean keyframe interval; not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value >= 1


def looks_channels_last(x: Any) -> bool:
    """Whether a 4-D tensor looks like channels-last images ``[B, H, W, C]``: ``C <= 4 < H, W`` (RGB, RGBA, grey
    frames; a channels-first ``[B, C, H, W]`` image has ``W > 4``, and codes ``[B, D, 1, 1]`` or small latent
    grids ``[B, D, 4, 4]`` have ``H <= 4``)."""
    return isinstance(x, Tensor) and is_channels_last_shape(tuple(x.shape))


def is_channels_last_shape(shape: tuple[int, ...]) -> bool:
    """:func:`looks_channels_last` on a shape."""
    return len(shape) == 4 and shape[-1] <= 4 < min(shape[1], shape[2])


def channels_last_inputs(example: tuple[Any, ...]) -> tuple[bool, ...]:
    """Per example input: whether it looks channels-last (:func:`looks_channels_last`): such inputs, and clips
    ``[T, H, W, C]`` for them, are cropped and flipped in their dimensions 1 and 2."""
    return tuple(looks_channels_last(x) for x in example)


def refuse_valueless(x: Tensor, what: str) -> None:
    """Refuse a tensor the generator cannot run as an input: on the meta device (no values) or not dense (sparse).

    Raises:
        InputTypeError: naming ``what`` and the fix.
    """
    if x.is_meta:
        raise InputTypeError(f"{what} is on the meta device: it holds no values to run; give a tensor on the module's device")
    if x.layout != torch.strided:
        raise InputTypeError(f"{what} is a {x.layout} tensor; the generator runs dense ones: give x.to_dense()")


def check_like_example(x: Tensor, example: Any, what: str, j: int, lead: str = "B") -> None:
    """Check that ``x`` can stand where the example input ``j`` stood when the generator was wrapped:
    as many dimensions, the same channels (dimension 1 of 4-D examples, unless the example looks
    channels-last, ``[B, H, W, C]`` with ``C <= 4 < H``: such an input keeps its sizes free),
    floating where the example is. Sizes and batch may differ; ``what`` names ``x`` in the message, ``lead``
    its first dimension (``"B"`` for frames, ``"T"`` for clips).

    Raises:
        InputMismatchError: another number of dimensions or channels.
        InputTypeError: ``x`` is not floating point where the example is.
    """
    refuse_valueless(x, what)
    if not isinstance(example, Tensor):
        return
    shape = list(example.shape)
    if x.dim() != example.dim():
        if x.dim() == example.dim() - 1:
            batch = (" (one frame without its batch dimension? x.unsqueeze(0) adds it)" if lead == "B" else
                     " (a single clip given where a collection of clips is expected? wrap it in a list: [clip])")
        elif x.dim() == example.dim() + 1 and lead == "T":
            batch = (f" (several clips in one tensor, [T, B, ...] or [N, T, ...]? each clip is one stream, "
                     f"[T, {', '.join(map(str, shape[1:]))}]: give a list of them, list(x.unbind(1)) or list(x))")
        else:
            batch = ""
        raise InputMismatchError(
            f"{what} has shape {list(x.shape)}, but the generator's input {j} was {shape} when it was wrapped: "
            f"give {example.dim()}-D tensors{batch}"
        )
    channels_first = example.dim() == 4 and not looks_channels_last(example)
    if channels_first and x.shape[1] != example.shape[1]:
        raise InputMismatchError(
            f"{what} has {x.shape[1]} channels, the generator's input {j} {example.shape[1]} (example {shape}): give "
            f"[{lead}, {example.shape[1]}, H, W] tensors"
        )
    if example.is_floating_point() and not x.is_floating_point():
        raise InputTypeError(
            f"{what} is {x.dtype}, but the generator's input {j} is floating ({example.dtype}): convert the frames to "
            f"floating point in the value range the generator was trained on (for example {SCALING_HINT})"
        )


def refuse_untensored(example: tuple[Any, ...], model: Any, who: str) -> None:
    """Refuse, for ``who`` (training, evaluation, saving: what takes clips of tensors or stores the
    example), example inputs that are not all tensors, naming the way round: ``concrete_args``, which
    fix such an argument in the captured programs (and are saved with the block).

    Raises:
        InputTypeError: an example input is not a tensor.
    """
    for j, x in enumerate(example):
        if isinstance(x, Tensor):
            continue
        try:
            names = [p.name for p in inspect.signature(model.forward).parameters.values()]
        except (TypeError, ValueError, AttributeError):
            names = []
        name = names[j] if j < len(names) else f"<argument {j}>"
        if any(isinstance(v, Tensor) for v in tree_flatten(x)[0]):  # (a dict or list of tensors: per-frame values)
            raise InputTypeError(
                f"{who} needs example inputs that are each a tensor, but the generator's input {j} ({name!r}) is a "
                f"{type(x).__name__} holding tensors (clips and saved example inputs hold one tensor per input): give "
                "the generator a wrapper module whose forward() takes each tensor as an argument of its own (and builds "
                f"the {type(x).__name__}), and wrap that"
            )
        shown = repr(x) if len(repr(x)) <= 60 else "..."
        raise InputTypeError(
            f"{who} needs example inputs that are all tensors, but the generator's input {j} ({name!r}) was given as "
            f"{type(x).__name__} {shown}: fix that argument instead, shortcutify(..., concrete_args={{{name!r}: {shown}}}) "
            "with the tensors alone in example_inputs (the value is then part of the captured programs and saved with the block)"
        )


def shapes_of(inputs: Any) -> list[tuple[int, ...]]:
    """The shapes of the tensors among ``inputs`` (any structure), in order."""
    return [tuple(int(n) for n in v.shape) for v in tree_flatten(inputs)[0] if isinstance(v, Tensor)]


def frames_batch(shapes: Iterable[Sequence[int]]) -> int:
    """The batch size of the frames among input ``shapes`` (:func:`shapes_of`): the largest first dimension
    of the 4-D and 5-D ones (frames ``[B, C, H, W]``, stacks ``[B, C, D, H, W]``); 0 without one. Other
    inputs (a shared palette ``[K, 3]``, a per-frame vector) do not count."""
    return max((int(s[0]) for s in shapes if len(s) in (4, 5)), default=0)


def check_tap_rows(enc_shape: tuple[int, ...], dec_shape: tuple[int, ...], inputs: Any, taps: tuple[str, str]) -> None:
    """Refuse taps with fewer rows than the frames' batch (:func:`frames_batch`), or a decoder tap with other
    rows than the encoder tap: a generator that folds the batch into channels there (``[1, B·C, H, W]``, as a
    grouped conv over a batch does) would have the block mix the streams, and be built for the example's
    batch size alone.

    Raises:
        TapShapeError: naming the taps ``(enc_layer, dec_layer)`` and the rows.
    """
    batch = frames_batch(shapes_of(inputs))
    if enc_shape[0] >= batch and dec_shape[0] == enc_shape[0]:
        return

    def why(rows: int) -> str:
        if rows < batch:
            return (
                "fewer rows than frames: the generator folds the batch into channels there (a grouped convolution over "
                "[1, B·C, H, W], as StyleGAN's modulated convs do), or the value does not come from the frames at all "
                "(a table computed from weights, as a relative position bias)"
            )
        if rows % batch == 0:
            return (
                f"{rows // batch} rows per frame: the generator folds windows, patches or heads into the batch there "
                "(window attention's [windows·B, heads, N, N])"
            )
        return "rows that are not a whole number per frame"

    odd = [(name, shape[0]) for name, shape in zip(taps, (enc_shape, dec_shape)) if shape[0] != batch]
    odd = odd or [(taps[1], dec_shape[0])]  # (both at least the batch, the decoder tap's rows differing)
    reasons = "; ".join(f"{name!r} has {rows} row(s), {why(rows)}" for name, rows in odd)
    raise TapShapeError(
        f"the taps {taps[0]!r} ({enc_shape[0]} rows) and {taps[1]!r} ({dec_shape[0]} rows) do not hold the batch of "
        f"{batch} frame(s) one row each, alike: {reasons}. A block on them would mix the streams or be built for "
        "this batch size alone. Tap layers whose values are [B, C, H, W] feature maps of the frames (list_taps())."
    )


def frame_aspect(shapes: Iterable[Sequence[int]]) -> float | None:
    """Height / width of the first frame among input ``shapes`` (:func:`shapes_of`): 4-D, ``[B, C, H, W]``
    (or ``[B, H, W, C]``, :func:`is_channels_last_shape`), of more than 4×4 pixels (not a code
    ``[B, D, 1, 1]``); ``None`` without one."""
    for s in shapes:
        if len(s) == 4:
            h, w = (s[1], s[2]) if is_channels_last_shape(tuple(s)) else (s[2], s[3])
            if min(h, w) > 4:
                return h / w
    return None


#: how far (as a factor) a tap's height / width may lie from the frame's before :func:`off_frame_aspect` says the tap
#: is no feature map of the frame: convolutions keep the aspect up to padding and rounding; an attention matrix
#: ``[B, heads, C, N]`` or tokens folded into rows do not
ASPECT_FACTOR = 2.0


def off_frame_aspect(shape: tuple[int, ...], aspect: float | None) -> bool:
    """Whether a 4-D value ``[B, C, H, W]`` has a height / width more than :data:`ASPECT_FACTOR` times off the frame's
    ``aspect`` (:func:`frame_aspect`; never without one)."""
    if aspect is None or min(shape[2:]) <= 0:
        return False
    return abs(math.log(shape[2] / shape[3] / aspect)) > math.log(ASPECT_FACTOR)


def tap_looks_channels_last(shape: tuple[int, ...], aspect: float | None) -> bool:
    """Whether a 4-D value looks ``[B, H, W, C]``: dimensions 1 and 2 have the frame's aspect, 2 and 3 do not
    (a transformer's tokens on the frame's grid; the block would take its rows for channels)."""
    if aspect is None or min(shape[1:]) <= 0:
        return False

    def near(h: int, w: int) -> bool:
        return abs(math.log(h / w / aspect)) < math.log(1.25)

    return near(shape[1], shape[2]) and not near(shape[2], shape[3])
