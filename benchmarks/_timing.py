"""Timing for the benchmarks: CPU time (`time.process_time`, what a shared machine's load disturbs least)
and wall time, best and median of several runs. One-time work (imports, trace generation, capacity
probes) stays outside the timed function."""

from __future__ import annotations

import functools
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    cpu_best_s: float
    cpu_median_s: float
    wall_best_s: float
    wall_median_s: float
    runs: int

    def per_s(self, work: float) -> str:
        """`work` units per CPU second (best run) and per wall second (best run)."""
        return f"{work / self.cpu_best_s:,.0f} per CPU-s, {work / self.wall_best_s:,.0f} per wall-s"

    def __str__(self) -> str:
        return (
            f"CPU best {self.cpu_best_s:.3f} s (median {self.cpu_median_s:.3f}), "
            f"wall best {self.wall_best_s:.3f} s (median {self.wall_median_s:.3f}), {self.runs} runs"
        )


def timed(fn: Callable[[], Any], runs: int = 3) -> tuple[Timing, Any]:
    """Run `fn` `runs` times; its timings and the last result."""
    cpu, wall, result = [], [], None
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return Timing(min(cpu), statistics.median(cpu), min(wall), statistics.median(wall), runs), result


@functools.cache
def heap_op_s(n: int = 200_000, runs: int = 5) -> float:
    """CPU seconds of one bare `heapq` push + pop on a heap of 1,000 (time, counter) items, best of `runs`: the unit
    in which the benchmarks state a request's cost ("heap-operation equivalents"), so that figures from machines of
    different speeds compare."""
    import heapq
    import random

    rnd = random.Random(0)
    times = [rnd.random() for _ in range(n)]
    best = float("inf")
    for _ in range(runs):
        heap = [(rnd.random(), i) for i in range(1000)]
        heapq.heapify(heap)
        push, pop = heapq.heappush, heapq.heappop
        c0 = time.process_time()
        for i, t in enumerate(times):
            push(heap, (t, i))
            pop(heap)
        best = min(best, time.process_time() - c0)
    return best / n


def per_request(timing: Timing, n_requests: int, n_events: int | None = None) -> str:
    """A run's cost per request: CPU microseconds (best run), heap-operation equivalents (`heap_op_s`) and, given the
    run's events, events per request."""
    cpu = timing.cpu_best_s / n_requests
    out = f"{cpu * 1e6:.1f} CPU-us per request = {cpu / heap_op_s():.0f} heap-operation equivalents"
    return out if n_events is None else f"{out}, {n_events / n_requests:.2f} events"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_profile(fn: Callable[[], Any], repeat: int = 1, top: int = 15) -> None:
    """cProfile `fn` (called `repeat` times) and print the `top` functions by own time."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(repeat):
        fn()
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(top)
