"""Notifications a target sends a source over NIXL: "I pulled N bytes from you" when a pull is done.

One notice per source per pull, sent after the READs, never attached to each READ: a READ carrying a
notification is not complete until the passive side has progressed, which made every chunk wait on
the source's responder loop.
"""

from __future__ import annotations

_PULLED = b"mx-pulled:"


def pulled(nbytes: int) -> bytes:
    return _PULLED + str(nbytes).encode()


def parse_pulled(message: bytes) -> int | None:
    """The byte count of a "pulled" notice; None for any other message (peers may send their own)."""
    if not message.startswith(_PULLED):
        return None
    count = message[len(_PULLED) :]
    return int(count) if count.isdigit() else None
