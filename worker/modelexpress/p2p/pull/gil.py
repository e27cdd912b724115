"""A short GIL switch interval while a pull moves bytes.

A pull has two busy threads: the poster, which makes and posts READs (NIXL releases the GIL inside),
and the checksum thread, which hashes what landed. When the poster comes back for the GIL while the
checksum thread holds it, it waits for the interpreter's switch interval (5 ms by default) before the
GIL is handed over. For a 100k-tensor pull that was about 5 ms per READ made (22 READs: 0.19 s of a
0.5 s pull); with 0.5 ms it was 0.02 s. The interval is process-wide, so it is shortened only while
some pull runs and restored when the last one ends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

PULL_SWITCH_INTERVAL = 0.0005
"""Seconds a thread waiting for the GIL lets its holder run before asking for it, during a pull."""


class _Holders:
    """How many blocks hold the interval short, and what it was before the first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.saved: float | None = None  # the interval to put back (None: it was left as it was)


_HOLDERS = _Holders()


@contextlib.contextmanager
def short_switch_interval(seconds: float = PULL_SWITCH_INTERVAL) -> Iterator[None]:
    """Shorten the switch interval to `seconds` (never lengthen it) until the last such block ends."""
    holders = _HOLDERS
    with holders.lock:
        if holders.count == 0:
            before = sys.getswitchinterval()
            holders.saved = before if seconds < before else None  # set only to shorten: it is rounded
            if holders.saved is not None:
                sys.setswitchinterval(seconds)
        holders.count += 1
    try:
        yield
    finally:
        with holders.lock:
            holders.count -= 1
            if holders.count == 0 and holders.saved is not None:
                sys.setswitchinterval(holders.saved)
