"""Shared timing for the benchmarks (run as scripts, so they import this by its bare name)."""

from __future__ import annotations

import sys
from pathlib import Path

# Time the checkout this file sits in, not whatever an editable install points at (another worktree).
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


class Paired:
    """Per-round seconds of several functions timed in turn (see :func:`interleaved`)."""

    def __init__(self, samples: dict[str, list[float]], clock: str):
        self.samples, self.clock = samples, clock

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of ``t_a / t_b``: pairing within a round cancels slow drift."""
        return statistics.median(x / y for x, y in zip(self.samples[a], self.samples[b]))

    def spread(self, name: str) -> float:
        """``(max - min) / median`` of one function's rounds: how noisy the machine was."""
        s = self.samples[name]
        return (max(s) - min(s)) / statistics.median(s)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: str = "cpu", warmup: int = 1) -> Paired:
    """Time every function once per round, ``repeats`` rounds, in turn (A B C C B A ...).

    On CPU the clock is this process's CPU time (``time.process_time``: user + system of all
    its threads), so other processes on a shared machine do not count; run with one torch
    thread for figures that compare. On CUDA it is wall time with synchronisation.
    """
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    clock = time.perf_counter if device == "cuda" else time.process_time
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        # A B C, then C B A: whatever the first of a round pays (a cold cache after the
        # previous function) falls on every function alike.
        for k, fn in list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]:
            sync()
            t = clock()
            fn()
            sync()
            samples[k].append(clock() - t)
    return Paired(samples, "wall (cuda)" if device == "cuda" else "process CPU")
