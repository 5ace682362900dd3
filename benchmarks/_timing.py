"""Shared timing for the benchmarks (run as scripts, so they import this by its bare name)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run (first calls
    pay for allocations and lazy initialisation); CUDA is synchronised around each run."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
