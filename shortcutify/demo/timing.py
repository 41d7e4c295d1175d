"""Wall-clock timing of several calls side by side (one process, interleaved rounds)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["time_calls"]


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
