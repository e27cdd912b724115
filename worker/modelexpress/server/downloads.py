"""One download per model however many clients ask: each waiter gets every status update of it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from modelexpress._proto.modelexpress.v1 import server_pb2

Update = server_pb2.ModelStatusUpdate
Work = Callable[[Callable[[Update], None]], None]


@dataclass
class _Flight:
    last: Update | None = None
    done: bool = False
    waiters: list[queue.SimpleQueue[Update | None]] = field(default_factory=list)


class SingleFlight:
    """Runs `work` once per key while it is in flight; late joiners get the latest update, then the rest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str], _Flight] = {}
        self.started = 0

    def in_flight(self) -> dict[tuple[str, str], Update | None]:
        """Each download in flight and its latest update (None before the first)."""
        with self._lock:
            return {key: flight.last for key, flight in self._flights.items()}

    def join(self, key: tuple[str, str], work: Work, alive: Callable[[], bool] = lambda: True) -> Iterator[Update]:
        """Every update of the flight for `key` (starting it if none is in flight) until it ends, or
        until `alive()` turns false (the caller went away: its RPC was cancelled)."""
        inbox: queue.SimpleQueue[Update | None] = queue.SimpleQueue()
        with self._lock:
            flight = self._flights.get(key)
            starter = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
                self.started += 1
            elif flight.last is not None:
                inbox.put(flight.last)
            flight.waiters.append(inbox)
        if starter:
            threading.Thread(
                target=self._run, args=(key, flight, work), name=f"mx-download-{key[0]}", daemon=True
            ).start()
        try:
            while True:
                try:
                    update = inbox.get(timeout=0.5)
                except queue.Empty:
                    if not alive():
                        return
                    continue
                if update is None:
                    return
                yield update
        finally:
            with self._lock:
                if inbox in flight.waiters:
                    flight.waiters.remove(inbox)

    def _run(self, key: tuple[str, str], flight: _Flight, work: Work) -> None:
        def publish(update: Update) -> None:
            with self._lock:
                flight.last = update
                waiters = list(flight.waiters)
            for waiter in waiters:
                waiter.put(update)

        try:
            work(publish)
        finally:
            with self._lock:
                self._flights.pop(key, None)
                waiters = list(flight.waiters)
            for waiter in waiters:
                waiter.put(None)
