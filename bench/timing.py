"""Timing shared by the benchmarks: the best of N runs (the least disturbed by the rest of the machine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(repeat: int, run: Callable[[], T], prepare: Callable[[], object] | None = None) -> tuple[float, T]:
    """The shortest wall time of `repeat` calls of `run`, and what the last call returned; `prepare`, when
    given, runs untimed before each call."""
    seconds, result = float("inf"), None
    for _ in range(repeat):
        if prepare is not None:
            prepare()
        started = time.perf_counter()
        result = run()
        seconds = min(seconds, time.perf_counter() - started)
    return seconds, result  # type: ignore[return-value]
