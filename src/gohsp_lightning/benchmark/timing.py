"""Median time per call of several functions, timed in turns so that they all see the same machine load."""

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
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int, min_sample_s: float
) -> dict[str, float]:
    """Median seconds per call of every function, timed in turns (a, b, a, b, ...) after ``warmup`` calls each.

    Each sample repeats a call until it lasts about ``min_sample_s`` (fast GPU/batch-1 calls), the same
    count for every function so the turns stay balanced.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    first = []
    for fn in fns.values():
        start = time.perf_counter()
        fn()
        sync(device)
        first.append(time.perf_counter() - start)
    number = max(1, math.ceil(min_sample_s / max(min(first), 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def out_of_memory(err: BaseException) -> bool:
    """True for a device out-of-memory error (a batch size to skip, not a bug)."""
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()
