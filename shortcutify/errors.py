"""Exception types raised by shortcutify.

The errors about a generator, its taps, inputs, captures, checkpoints and streams derive from
:class:`ShortcutifyError`, so ``except ShortcutifyError`` catches them; each subclass also derives
from the built-in type a user would expect (``KeyError``, ``ValueError``, ``TypeError``...). A bad
argument value or type of a call (a negative ``width``, ``interval=0``, an unknown ``resolution``) is a
plain ``ValueError`` or ``TypeError``, as in PyTorch.
"""

from __future__ import annotations

__all__ = [
    "ShortcutifyError",
    "UnknownTapError",
    "AmbiguousTapError",
    "TapOrderError",
    "TapShapeError",
    "EmptyCutError",
    "UntraceableModelError",
    "CaptureMismatchError",
    "FixedArgumentError",
    "IncompatibleCheckpointError",
    "StreamSplitError",
    "InputMismatchError",
    "InputTypeError",
    "PolicyError",
    "PlacementError",
    "GradientError",
    "GeneratorStateError",
    "OutputSelectionError",
    "RecompileLimitError",
    "ConcurrentCallError",
    "NonFiniteKeyframeWarning",
]


class ShortcutifyError(Exception):
    """Base class of shortcutify's own errors (see the module docstring for what they cover)."""


class UnknownTapError(ShortcutifyError, KeyError):
    """A tap name is neither an fx node name nor a module qualified name of the model."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


class AmbiguousTapError(ShortcutifyError, ValueError):
    """A module qualified name was given as a tap but the module is called more than once."""


class TapOrderError(ShortcutifyError, ValueError):
    """The taps are in the wrong order, the decoder tap does not depend on the encoder tap, or the
    encoder tap does not depend on the frames (its value stays the same when they change)."""


class TapShapeError(ShortcutifyError, ValueError):
    """A tap's value is not a 4-D tensor ``[B, C, H, W]``."""


class EmptyCutError(ShortcutifyError, ValueError):
    """The part of the model between the taps costs no multiply-adds: a shortcut saves nothing."""


class UntraceableModelError(ShortcutifyError, TypeError):
    """Neither ``torch.fx`` nor ``torch.export`` (whichever was tried) could capture the model's graph."""


class CaptureMismatchError(UntraceableModelError):
    """The captured graph computes something other than the model on the example inputs."""


class FixedArgumentError(ShortcutifyError, ValueError):
    """A call passed another value for an argument of ``forward`` that the captured graph fixed."""


class IncompatibleCheckpointError(ShortcutifyError, ValueError):
    """A saved shortcut block does not match the generator it is being attached to."""


class StreamSplitError(ShortcutifyError, ValueError):
    """Streams of one batch took different paths (keyframe / shortcut), but the inputs or
    outputs are not batched by stream, so they cannot be split and merged."""


class InputMismatchError(ShortcutifyError, ValueError):
    """An input (a frame, a clip tensor) has another number of dimensions or channels than the
    example input the generator was wrapped with."""


class InputTypeError(ShortcutifyError, TypeError):
    """An input is not floating point where the example input was (``uint8`` video for a
    generator of floating inputs: its scaling cannot be guessed), or is of another floating dtype
    than the module's weights where the generator cannot take it (``float64`` frames into a
    ``float32`` module); or an example input is not a tensor where clips of tensors are trained on or
    the example is saved (fix such an argument with ``concrete_args``)."""


class PolicyError(ShortcutifyError, TypeError):
    """A keyframe policy answered something other than one bool per stream."""


class PlacementError(ShortcutifyError, RuntimeError):
    """The generator's weights are on another device or of another dtype than the module's block: the
    generator was moved or cast outside the module (``generator.to(...)``, or another module sharing it)."""


class GeneratorStateError(ShortcutifyError, ValueError):
    """The generator cannot be wrapped as it is: a TorchScript module, weights on the ``meta`` device
    (no values), or lazy modules not yet initialised."""


class GradientError(ShortcutifyError, RuntimeError):
    """Training cannot backpropagate through the generator's layers that a shortcut frame runs after
    the decoder tap (an in-place op there overwrote a tensor autograd needs)."""


class OutputSelectionError(ShortcutifyError, ValueError):
    """The image to compare cannot be taken from the generator's output: it holds no floating
    ``[B, C, H, W]`` tensor, or ``output=`` names a key or index it lacks, or a function that returns
    something other than an image; or, in ``distill``, a loss term compares an image that the shortcut
    frame does not change (computed outside the layers it replaces)."""


class RecompileLimitError(ShortcutifyError, RuntimeError):
    """A module compiled with ``fullgraph=True`` met more input signatures than ``torch.compile`` compiles
    versions of one program (``torch._dynamo.config.recompile_limit``); the message names the ways out."""


class ConcurrentCallError(ShortcutifyError, RuntimeError):
    """A stateful module was called from a thread while a call from another thread was still running: its
    streams are its state, so the two threads' frames would run against each other's keyframes."""


class NonFiniteKeyframeWarning(UserWarning):
    """A keyframe's tap values hold a NaN or an infinity: its streams take a keyframe again on the next call."""
