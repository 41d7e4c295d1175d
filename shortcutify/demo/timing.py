"""Wall-clock timing of several calls side by side (one process, interleaved rounds), and the
calls that time the paths of a :class:`~shortcutify.ShortcutV2V`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..core.cost import amortised

__all__ = ["time_calls", "path_calls", "amortised"]


def time_calls(calls: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 3, cuda: bool = False) -> dict[str, float]:
    """Median seconds per call of each entry of ``calls``.

    All calls run in this process, interleaved round by round so that machine noise hits
    them alike, after ``warmup`` rounds. With ``cuda`` each call is timed with CUDA events
    between synchronisations.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                samples[k].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def path_calls(sv: Any, inputs: Any) -> dict[str, Callable[[], object]]:
    """One frame of each path of ``sv`` on ``inputs`` (a tensor or a tuple), as argument-free calls.

    ``teacher``: the generator; ``keyframe``: the teacher with its taps plus the block's
    reference preparation; ``shortcut``: a shortcut frame as :meth:`~shortcutify.ShortcutV2V.forward`
    runs it; ``block``: the block alone. The reference is taken on ``inputs`` once, here.
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.no_grad():
        key = sv.run_keyframe(*args)
        ref = sv.prepare_reference(key)
    a = key.enc
    return {
        "teacher": lambda: sv.teacher(*args),
        "keyframe": lambda: sv.prepare_reference(sv.run_keyframe(*args)),
        "shortcut": lambda: sv.predict(*args, reference=ref),
        "block": lambda: sv.block(a, ref),
    }

