"""Median time per call of several functions, timed in turns so that they all see the same machine load.

On a shared or throttled machine the speed drifts by more than the effects being measured (seen here: one
dense model at 983, 722 and 599 ms in three runs), so times that are compared or combined (dense vs pruned;
a latency table's parts vs the whole model) are taken in the same rounds, never one after the other.
Timing runs at the process's own thread count (``torch.get_num_threads()``), as the models will.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    repeats: int,
    warmup: int,
    min_sample_s: float,
    balanced: bool = True,
) -> dict[str, float]:
    """Median seconds per call of every function, timed in turns (a, b, a, b, ...) after ``warmup`` calls each.

    Each sample repeats a call until it lasts about ``min_sample_s`` (fast GPU/batch-1 calls). ``balanced``:
    every function repeats the fastest one's count, so the turns of similar costs (dense vs pruned) stay
    balanced; otherwise each function gets its own count (a table whose entries differ by orders of magnitude).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    first = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        sync(device)
        first[name] = time.perf_counter() - start
    fastest = min(first.values())
    numbers = {
        name: max(1, math.ceil(min_sample_s / max(fastest if balanced else seconds, 1e-9)))
        for name, seconds in first.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / numbers[name])
    return {name: statistics.median(values) for name, values in samples.items()}
