"""Repairs: a tensor that failed its checksum is read again, whole, from one source (those not
implicated first), in chunks pinned to that source; a repair whose source failed moves to the next.

Only the tensor's own bytes are re-read, so tensors already verified are never overwritten. With no
source left to try, the tensor is dropped from the pull and comes from the fallback.
"""

from __future__ import annotations

import collections
import logging

from modelexpress.p2p.pull.book import Book
from modelexpress.p2p.pull.sources import Sources
from modelexpress.p2p.stream import Chunk, Piece

log = logging.getLogger(__name__)


class Repairs:
    def __init__(self, book: Book, sources: Sources, chunk_bytes: int) -> None:
        self.book, self.sources, self.chunk_bytes = book, sources, chunk_bytes

    def schedule(self, name: str, implicated: set[str]) -> None:
        """Queue `name` to be read again from the best source not tried for it yet."""
        book = self.book
        alive = [s.endpoint for s in self.sources.alive() if s.endpoint not in book.tried[name]]
        candidates = sorted(alive, key=lambda ep: ep in implicated)
        if not candidates:
            log.warning("no source left to fetch %s from; it will come from the fallback", name)
            book.arrivals.drop(name)
            return
        chosen = candidates[0]
        book.tried[name].add(chosen)
        log.warning("checksum mismatch on %s; fetching it again from %s", name, chosen)
        nbytes = book.sizes[name]
        indices: set[int] = set()
        for start in range(0, nbytes, self.chunk_bytes):
            chunk = Chunk.of(len(book.chunks), (Piece(name, start, min(self.chunk_bytes, nbytes - start)),))
            book.chunks.append(chunk)
            book.pinned[chunk.index] = chosen
            book.pending.append(chunk.index)
            indices.add(chunk.index)
        book.arrivals.refetch(name, indices)

    def repin_orphaned(self) -> None:
        """A repair pinned to a source that has since failed moves to the next candidate (or is dropped).
        Asked before every post: it looks at the pinned repairs only, not at every pending chunk."""
        book = self.book
        if not book.pinned:
            return
        alive = {s.endpoint for s in self.sources.alive()}
        stranded = [i for i, endpoint in book.pinned.items() if endpoint not in alive]
        if not stranded:
            return
        for i in stranded:  # delivered already, or dropped below: pinned to no one any more
            del book.pinned[i]
        pending = set(book.pending)
        orphaned: dict[str, set[int]] = collections.defaultdict(set)
        for i in stranded:
            if i in pending:
                orphaned[book.chunks[i].pieces[0].name].add(i)
        for name, dropped in orphaned.items():
            book.pending = collections.deque(i for i in book.pending if i not in dropped)
            self.schedule(name, set())
