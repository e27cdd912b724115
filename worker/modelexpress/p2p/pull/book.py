"""The book-keeping of one pull: the chunks (planned, then repairs), which are pending, who delivered
each, which tensors are verified or accepted unchecked, and the counts a report gives."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from modelexpress.p2p.pull.arrivals import Arrivals
from modelexpress.p2p.pull.backoff import Backoff
from modelexpress.p2p.pull.sources import Source
from modelexpress.p2p.stream import Chunk, Stream


@dataclass
class Book:
    chunks: list[Chunk]
    stream: Stream
    sizes: dict[str, int]
    """Each tensor's bytes by name (for sampling, coverage, repairs and partial reports)."""
    total: int = field(init=False)
    arrivals: Arrivals = field(init=False)
    pending: collections.deque[int] = field(init=False)
    delivered_by: dict[int, Source] = field(default_factory=dict)
    # repair chunks carry one tensor's bytes only and may come from one source only
    pinned: dict[int, str] = field(default_factory=dict)
    tried: collections.defaultdict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    verified: set[str] = field(default_factory=set)
    # tensors the policy accepted without a check (also in `verified`)
    unchecked: set[str] = field(default_factory=set)
    refetched: int = 0
    done_bytes: int = 0
    # when the last chunk landed: READs end there, and what verification does afterwards is its own phase
    last_arrival: float | None = None
    # how long the loop sleeps while READs are in flight, from how long they take here
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        self.total = sum(c.nbytes for c in self.chunks)  # repair chunks re-read bytes, they add none
        self.arrivals = Arrivals(self.chunks, self.stream)
        self.pending = collections.deque(c.index for c in self.chunks)

    def deliverer(self, name: str) -> Source | None:
        """The source that delivered the tensor's first chunk (whose checksum it is checked against)."""
        return self.delivered_by.get(min(self.arrivals.chunks_of(name), default=-1))

    def implicated(self, name: str) -> set[str]:
        """The sources that delivered any chunk of `name`."""
        delivered = self.delivered_by
        return {delivered[i].endpoint for i in self.arrivals.chunks_of(name) if i in delivered}

    def all_verified(self) -> bool:
        return len(self.verified) == len(self.sizes)  # verified holds names of ours only

    def pulled_bytes(self) -> int:
        return self.stream.total if self.all_verified() else sum(map(self.sizes.__getitem__, self.verified))
