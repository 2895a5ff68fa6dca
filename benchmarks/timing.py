"""Timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, which puts
this folder on ``sys.path``)."""
from __future__ import annotations

import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall-clock seconds of one ``fn()`` call over ``repeats`` calls (the upper middle
    one for an even count), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
