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

    def join(self, key: tuple[str, str], work: Work) -> Iterator[Update]:
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
        while (update := inbox.get()) is not None:
            yield update

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
