"""Work handed to the verify thread, taken in batches when it falls behind.

A verify job has a fixed cost whatever its bytes (launches, a read-back, a comparison). When READs
land faster than one job per READ can be done, as into GPU memory, the jobs queue up and that fixed
cost is paid once per READ. A `Backlog` keeps the items instead and has one drain scheduled at a
time: the drain takes every item added until it starts, so a thread that fell behind catches up in
one job, and one that keeps up still sees each item alone, as soon as it is added.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Backlog(Generic[Item]):
    """Items for `process`, run on `executor` a batch at a time, in the order they were added."""

    def __init__(self, executor: Executor, process: Callable[[list[Item]], None]) -> None:
        self._executor = executor
        self._process = process
        self._lock = threading.Lock()
        self._items: list[Item] = []
        self._scheduled = False

    def add(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
            if self._scheduled:  # the drain already queued will take it
                return
            self._scheduled = True
        self._executor.submit(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items, self._scheduled = self._items, [], False
        if items:
            self._process(items)
