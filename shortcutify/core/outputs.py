"""Which part of a generator's output is the image that training and the metrics compare.

A generator may return one image ``[B, C, H, W]``, or a tuple or dict holding several
tensors (a multi-stage model's intermediate images, a flow, a mask). :func:`distill`,
:func:`evaluate` and :func:`calibrate` compare one image per frame: by default the first
floating 4-D leaf (:func:`output_image`), or the part named by their ``output=`` argument
(an :data:`OutputSelector`).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Union

from torch import Tensor
from torch.utils._pytree import tree_flatten

from ..errors import OutputSelectionError
from .checks import looks_channels_last

__all__ = ["OutputSelector", "check_selector", "floating_leaves", "image_count", "output_image"]

#: Names the image in a generator's output: a key of a dict output (or a field of a dataclass or
#: named tuple output), an index into a tuple or list output, or a function ``f(output) -> Tensor``
#: returning the image ``[B, C, H, W]``; ``None``: the first floating ``[B, C, H, W]`` leaf.
OutputSelector = Union[str, int, Callable[[Any], Tensor], None]


def check_selector(output: Any, who: str) -> OutputSelector:
    """``output`` as an :data:`OutputSelector` (an integer as ``int``); TypeError naming ``who`` if it is not one."""
    if output is None or isinstance(output, str) or callable(output):
        return output
    if isinstance(output, numbers.Integral) and not isinstance(output, bool):
        return int(output)
    raise TypeError(
        f"{who}: output must name the image in the generator's output: a key (str), an index (int), a function "
        f"f(output) -> image [B, C, H, W], or None for the first image; got {output!r}"
    )


def _describe(out: Any) -> str:
    if isinstance(out, Tensor):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out)!r}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def _fields(out: Any) -> list[str] | None:
    """The field names of a dataclass or named tuple output (None for other objects)."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return [f.name for f in dataclasses.fields(out)]
    names = getattr(type(out), "_fields", None)
    return list(names) if isinstance(out, tuple) and isinstance(names, tuple) else None


def _select(out: Any, output: OutputSelector) -> Any:
    """The part of ``out`` that ``output`` names."""
    if isinstance(output, str):
        if isinstance(out, Mapping):
            if output in out:
                return out[output]
            raise OutputSelectionError(f"output={output!r}: the generator's output is {_describe(out)}, without that key")
        names = _fields(out)
        if names is not None:
            if output in names:
                return getattr(out, output)
            raise OutputSelectionError(f"output={output!r}: the generator's output is a {type(out).__name__} with fields {names!r}")
        raise OutputSelectionError(
            f"output={output!r} names a key, but the generator's output is {_describe(out)}: give an index for a tuple, "
            "a function, or None"
        )
    if callable(output):
        picked = output(out)
        if not (isinstance(picked, Tensor) and picked.is_floating_point() and picked.dim() in (4, 5)):
            got = f"a {picked.dtype} tensor {tuple(picked.shape)}" if isinstance(picked, Tensor) else type(picked).__name__
            raise OutputSelectionError(
                f"output={getattr(output, '__name__', output)!r} returned {got}; it must return the image, a floating "
                "tensor [B, C, H, W] (or a stack [B, C, D, H, W])"
            )
        return picked
    index = int(output)  # type: ignore[arg-type]
    if isinstance(out, Mapping) and index in out:
        return out[index]
    if isinstance(out, (tuple, list)):
        if -len(out) <= index < len(out):
            return out[index]
        raise OutputSelectionError(f"output={index}: the generator's output is {_describe(out)}, the index is out of range")
    raise OutputSelectionError(
        f"output={index} names an index, but the generator's output is {_describe(out)}: give a key for a dict (a field "
        "name for a dataclass), a function, or None"
    )


def floating_leaves(out: Any) -> list[Tensor]:
    """The floating tensors of an output (any pytree: tuples, lists, dicts, registered dataclasses), in order."""
    return [v for v in tree_flatten(out)[0] if isinstance(v, Tensor) and v.is_floating_point()]


def image_count(out: Any) -> int:
    """How many floating 4-D or 5-D tensors (images, stacks) an output holds."""
    return sum(v.dim() in (4, 5) for v in floating_leaves(out))


def output_image(out: Any, output: OutputSelector = None) -> Tensor:
    """The image a generator's output stands for: the part ``output`` names, else the first floating 4-D tensor in it.

    ``[B, C, H, W]``. ``output``: see :data:`OutputSelector`; ``None`` takes the first floating 4-D
    leaf (dicts in insertion order), else the first 5-D one. A channels-last image ``[B, H, W, C]``
    (:func:`~shortcutify.core.checks.looks_channels_last`) is returned as a ``[B, C, H, W]`` view, so that
    SSIM and a perceptual loss see its height and width. A stack of frames ``[B, C, D, H, W]`` (or
    ``[B, D, C, H, W]``: the two read alike; ``[B, D, H, W, C]`` moved first) is returned as one image per
    stack, ``[B, C·D, H, W]``: PSNR, SSIM (per plane, then averaged) and the pixel losses see every frame
    of it, whichever the order (a perceptual loss for 3-channel images does not take it).

    Raises:
        OutputSelectionError: (a ``ValueError``) no such image: ``output`` names a key, field or index the
            output lacks, a function returns something else, or the output holds no floating image.
    """
    part = out if output is None else _select(out, output)
    leaves = floating_leaves(part)
    for leaf in leaves:
        if leaf.dim() == 4:
            return leaf.movedim(-1, 1) if looks_channels_last(leaf) else leaf
    for leaf in leaves:
        if leaf.dim() == 5:
            return (leaf.movedim(-1, 1) if looks_channels_last(leaf.flatten(0, 1)) else leaf).flatten(1, 2)
    where = "the generator's output" if output is None else f"the part output={output!r} names ({_describe(part)})"
    raise OutputSelectionError(
        f"{where} holds no floating tensor [B, C, H, W] (or a stack [B, C, D, H, W]) to compare: distill, evaluate and "
        "calibrate measure image outputs; return the image (in a tuple or dict if need be), or name it with output="
    )
