"""A small thread-safe map whose entries expire: answers of the API server reused for a few seconds.

A source checks every caller's token and pod; projected tokens rotate and pods come and go, so a
long-lived source would keep one entry per token and pod it ever saw. Expired entries are dropped
as new ones arrive (at most once per lifetime, so a put stays cheap).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """`get` returns what `put` stored less than its lifetime ago, else None.

    `lifetime` is the seconds an entry lives, or a function of its value (a refusal may live shorter
    than an answer)."""

    def __init__(self, lifetime: float | Callable[[V], float], clock: Callable[[], float] = time.monotonic) -> None:
        self._lifetime = lifetime if callable(lifetime) else (lambda _value, seconds=float(lifetime): seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (expiry, value)
        self._next_sweep = 0.0

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[0] <= self._clock():
                return None
            return hit[1]

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        lifetime = self._lifetime(value)
        with self._lock:
            self._entries[key] = (now + lifetime, value)
            if now >= self._next_sweep:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                self._next_sweep = now + lifetime

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
