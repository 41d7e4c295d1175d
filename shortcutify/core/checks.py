"""Argument checks shared by the core and training layers."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["is_count"]


def is_count(value: Any) -> bool:
    """Whether ``value`` is an integer >= 1 of any integer type (``numpy.int64`` too; not ``bool``)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1
