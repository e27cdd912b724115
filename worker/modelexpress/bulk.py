"""Building many small objects at once (manifest entries, chunk pieces) without the cyclic GC in the way.

Each decoded tensor is a few tuples, none of them part of a cycle. Allocating 100k of them set off
the cyclic collector again and again, and each full pass walks every object of the process (in a
serving engine: millions), which more than doubled the time of decoding a manifest or planning a pull.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting still frees everything at once)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def without_gc(function: Callable[P, R]) -> Callable[P, R]:
    """Run `function` with the cyclic collector paused."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with gc_paused():
            return function(*args, **kwargs)

    return wrapper
