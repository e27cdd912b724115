"""How long a pull's loop sleeps while its READs are in flight and nothing has moved.

Into GPU memory (and over RDMA) a READ completes on its own and the loop polls for it. A sleep
longer than the READs left in flight leaves the copy engine idle: a 512 MiB READ on an H200 takes
about 0.25 ms, and a fixed ceiling of 4 ms would idle it for most of each round. Spinning instead
would take a core, and the GIL, from the verify thread. So the sleep doubles from a short floor,
capped at a fraction of how long READs take on this link: the READ times seen so far in the pull
(a moving average), or, before the first one lands, the age of the oldest READ in flight.

On host memory UCX copies inside the post, so the loop finds its READs done and seldom sleeps.
"""

from __future__ import annotations

FLOOR = 20e-6
"""The shortest sleep (a sleep of less is mostly the call's own cost)."""
CEILING = 4e-3
"""The longest sleep, however slow the READs."""
FRACTION = 1 / 4
"""Of a READ's time: what a sleep may overshoot its completion by, at most."""
_WEIGHT = 0.25
"""Of the newest READ time, in the moving average."""


class Backoff:
    """The loop's sleep: `next` after a turn that moved nothing, `reset` after one that did."""

    def __init__(self) -> None:
        self.idle = FLOOR
        self.read_seconds: float | None = None

    def landed(self, seconds: float) -> None:
        """A READ completed `seconds` after it was posted."""
        if self.read_seconds is None:
            self.read_seconds = seconds
        else:
            self.read_seconds += _WEIGHT * (seconds - self.read_seconds)

    def reset(self) -> None:
        self.idle = FLOOR

    def next(self, oldest_age: float) -> float:
        """How long to sleep now; `oldest_age`: seconds since the oldest READ in flight was posted."""
        reference = self.read_seconds if self.read_seconds is not None else oldest_age
        cap = min(CEILING, max(FLOOR, reference * FRACTION))
        self.idle = min(self.idle * 2, cap)
        return self.idle
