"""Argument checks shared by the core and training layers."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["is_count", "is_interval"]


def is_count(value: Any) -> bool:
    """Whether ``value`` is an integer >= 1 of any integer type (``numpy.int64`` too; not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1


def is_interval(value: Any) -> bool:
    """Whether ``value`` is a real number >= 1 (a mean keyframe interval; not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value) and value >= 1
