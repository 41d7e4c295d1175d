"""Whether the Triton fast paths apply: one switch, one availability answer, one fallback rule.

The ops with a GPU fast path (:func:`~shortcutify.ops.adabd_conv`,
:func:`~shortcutify.ops.warp`) ask here whether their kernel applies to a device. The kernels
live in ``shortcutify.ops.*_triton`` modules, imported only where ``triton`` is installed (the
``gpu`` extra): on CUDA, and on any device under Triton's interpreter (``TRITON_INTERPRET=1``,
as read on the first ask). A kernel that fails at run time turns the fast path off for that
device type, with one warning, and the op computes its plain-PyTorch reference instead.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable

import torch

__all__ = ["use_fast_path", "fast_path_available", "fast_path_enabled", "kernel", "kernel_failed", "scoped_switch"]

_FAST_PATH = {"enabled": True}
# kernel name -> (module in this package, launcher); the launchers, imported once (None: unavailable)
_KERNELS = {"adabd": ("adabd_triton", "adabd_conv_triton"), "warp": ("warp_triton", "warp_triton")}
_TRITON: dict[str, Callable | None] = {}
_AVAILABLE: dict[str, bool] = {}


class _Switch(contextlib.AbstractContextManager):
    """Sets ``switch["enabled"]`` when made; as a context manager, gives the value before back on leaving the
    ``with`` block (also on an error), like ``torch.set_grad_enabled``."""

    def __init__(self, switch: dict[str, bool], enabled: bool) -> None:
        self._switch, self._before = switch, switch["enabled"]
        switch["enabled"] = bool(enabled)

    def __exit__(self, *exc: object) -> None:
        self._switch["enabled"] = self._before


def scoped_switch(switch: dict[str, bool], enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Set ``switch["enabled"]`` to ``enabled``: from now on when called, within the ``with`` block when used as a
    context manager (back afterwards): the library's on/off switches (:func:`use_fast_path`,
    :func:`~shortcutify.core.blocks.channels_last_inside`)."""
    return _Switch(switch, enabled)


def use_fast_path(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """The ops use their fast paths (Triton kernels, CPU gathers) where they apply (``True``, the default) or
    always their plain-PyTorch references (``False``): from the call on (``use_fast_path(False)``), or within a
    ``with use_fast_path(False):`` block only (the setting before comes back after it), as ``torch.set_grad_enabled``."""
    return scoped_switch(_FAST_PATH, enabled)


def fast_path_enabled() -> bool:
    """Whether :func:`use_fast_path` currently lets the fast paths run."""
    return _FAST_PATH["enabled"]


def kernel(name: str) -> Callable | None:
    """The launcher of kernel ``name`` (``"adabd"``, ``"warp"``), imported once; ``None`` (with
    one warning) when triton is missing or cannot build it."""
    if name not in _TRITON:
        _TRITON[name] = None
        if importlib.util.find_spec("triton") is not None:
            module, attribute = _KERNELS[name]
            try:
                _TRITON[name] = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
            except Exception as err:  # an incompatible triton: correct results from the reference, said once
                warnings.warn(f"shortcutify: the Triton fast path is off ({type(err).__name__}: {err}); the block runs in plain PyTorch")
    return _TRITON[name]


@torch.compiler.assume_constant_result  # compiled code reads the answer, never traces the import
def _kernel_for(device_type: str) -> bool:
    if device_type not in _AVAILABLE:
        interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
        _AVAILABLE[device_type] = (device_type == "cuda" or interpreted) and all(kernel(n) is not None for n in _KERNELS)
    return _AVAILABLE[device_type]


def fast_path_available(device: torch.device | str = "cuda") -> bool:
    """Whether the ops have their Triton fast paths for tensors on ``device``: CUDA with
    ``triton`` importable (or any device under Triton's interpreter, ``TRITON_INTERPRET=1``,
    as read on the first call), and no kernel has failed there. ``False`` for CUDA where this torch
    has no usable CUDA device (``torch.cuda.is_available()``), whatever triton says."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False
    return _kernel_for(kind)


def kernel_failed(device: torch.device, name: str, err: Exception) -> None:
    """Turn the fast path off for ``device``'s type after kernel ``name`` failed, saying so once."""
    _AVAILABLE[device.type] = False
    warnings.warn(
        f"shortcutify: the Triton kernel {name!r} failed on {device} ({type(err).__name__}: {str(err)[:500]}); "
        "the block runs in plain PyTorch from now on in this process. Please report this with your torch and triton versions"
    )
