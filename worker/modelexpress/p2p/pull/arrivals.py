"""Which tensors of a pull are complete, as its chunks arrive: waiting counts per tensor, in columns.

A chunk of `make_chunks` covers the stream positions [first, last] of its tensors, and every tensor
strictly between them lies wholly in that chunk. Only its first and last tensor can wait for other
chunks, so an arrival costs a few steps and one slice of names, whatever the number of tensors in the
chunk: a pull of 100k tensors does tens of arrivals, not 100k set operations. A tensor fetched again
(after a failed checksum) waits for its own chunks, tracked by name beside the columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy

from modelexpress.p2p.stream import Chunk, Stream


class Arrivals:
    """The chunks each tensor still waits for (planned chunks by count, re-fetches by index)."""

    def __init__(self, chunks: Sequence[Chunk], stream: Stream) -> None:
        count = len(stream.names)
        firsts = numpy.fromiter((c.first for c in chunks), dtype=numpy.int64, count=len(chunks))
        lasts = numpy.fromiter((c.last for c in chunks), dtype=numpy.int64, count=len(chunks))
        if len(chunks) and (firsts.min() < 0 or lasts.max() >= count or (lasts < firsts).any()):
            raise ValueError("planned chunks must carry their stream positions (make them with make_chunks)")
        if [c.index for c in chunks] != list(range(len(chunks))):
            raise ValueError("planned chunks must be numbered 0, 1, 2, ... in stream order")
        steps = numpy.zeros(count + 1, dtype=numpy.int64)
        numpy.add.at(steps, firsts, 1)
        numpy.add.at(steps, lasts + 1, -1)
        spans = numpy.cumsum(steps[:-1])
        if count and spans.min() < 1:
            raise ValueError("the planned chunks leave a tensor without bytes to wait for")
        self._names = stream.names
        self._position = stream.position
        self._spans = spans  # chunks per tensor, as planned
        self._waiting = spans.copy()  # of those, not arrived yet
        self._firsts, self._lasts = firsts, lasts
        self._arrived = numpy.zeros(len(chunks), dtype=bool)
        self._planned = len(chunks)
        # tensors fetched again: name -> (the chunks of that fetch, those of them not arrived yet)
        self._refetched: dict[str, tuple[frozenset[int], set[int]]] = {}
        self._dropped: set[str] = set()

    def arrive(self, chunk: Chunk) -> list[str] | None:
        """Record the chunk's arrival; the tensors it completed, or None when nothing waited for it
        (it had arrived already, or belongs to a fetch that was replaced)."""
        index = chunk.index
        if index >= self._planned:
            name = chunk.pieces[0].name
            refetch = self._refetched.get(name)
            if refetch is None or index not in refetch[1]:
                return None
            refetch[1].discard(index)
            return [] if refetch[1] else [name]
        if self._arrived[index]:
            return None
        self._arrived[index] = True
        first, last = chunk.first, chunk.last
        waiting = self._waiting
        waiting[first] -= 1
        if first != last:
            waiting[last] -= 1
        # a tensor is fetched again only once complete, so a planned chunk never completes a re-fetch
        head = [] if waiting[first] else [self._names[first]]
        if first == last:
            return head
        tail = [] if waiting[last] else [self._names[last]]
        return head + self._names[first + 1 : last] + tail

    def positions(self, chunk: Chunk, complete: Sequence[str]) -> numpy.ndarray:
        """The stream positions of the tensors `arrive(chunk)` returned for a planned chunk: always a
        run (the first tensor if it completed, the inner ones, the last if it completed)."""
        low = chunk.first if complete and complete[0] == self._names[chunk.first] else chunk.first + 1
        return numpy.arange(low, low + len(complete), dtype=numpy.int64)

    def chunks_of(self, name: str) -> list[int]:
        """The chunks of the tensor's latest fetch (none once it was dropped)."""
        if name in self._dropped:
            return []
        refetch = self._refetched.get(name)
        if refetch is not None:
            return sorted(refetch[0])
        position = self._position(name)
        low = int(numpy.searchsorted(self._lasts, position, side="left"))
        high = int(numpy.searchsorted(self._firsts, position, side="right"))
        return list(range(low, high))

    def partly_arrived(self) -> list[str]:
        """Tensors some but not all of whose chunks (of their latest fetch) have arrived."""
        partly = numpy.flatnonzero((self._waiting > 0) & (self._waiting < self._spans)).tolist()
        names = [self._names[p] for p in partly]
        return names + [n for n, (all_of, left) in self._refetched.items() if left and left != all_of]

    def refetch(self, name: str, indices: Iterable[int]) -> None:
        """The tensor is fetched again: it is complete once each of these chunks (numbered after the
        planned ones, one piece of this tensor each) has arrived."""
        chunks = frozenset(indices)
        if min(chunks, default=self._planned) < self._planned:
            raise ValueError(f"{name}: a re-fetch needs chunks of its own, numbered after the planned ones")
        self._refetched[name] = (chunks, set(chunks))
        self._dropped.discard(name)

    def drop(self, name: str) -> None:
        """Stop waiting for the tensor (it will come from elsewhere)."""
        self._dropped.add(name)
        self._refetched.pop(name, None)
