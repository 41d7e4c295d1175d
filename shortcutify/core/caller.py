"""Warnings addressed to the caller's own line: the first frame outside shortcutify and torch."""

from __future__ import annotations

import os
import sys
import warnings

import torch

__all__ = ["warn_caller"]

# this package, and torch (through which nn.Module.__setattr__ calls a property's setter)
_LIBRARIES = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (os.path.dirname(os.path.abspath(__file__)), torch.__file__))


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` at the line of the user's code that led here, however deep in the library
    (a warning raised by a property setter that ``load()`` or ``calibrate()`` calls names their caller)."""
    level = 2  # the caller of this function
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
