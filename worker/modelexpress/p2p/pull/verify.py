"""Verification beside the READs: one thread of its own checksums what lands and hands back verdicts.

The `Verifier` owns that thread, the queue its verdicts come back on and the count still awaited; what
it does with arrived bytes depends on the sources' checksum algorithm, one `Strategy` per algorithm
(registered in `STRATEGIES`): `xxh3-64` hashes pieces as they line up (`Xxh3Pieces`), `row-sum-64`
reduces each landed chunk's rows on the target's device and reads verdicts back a batch at a time
(`RowSumRuns`); sources of mixed algorithms have each completed tensor checked whole (`WholeTensors`).
The verifier only judges: acting on a verdict (accept, repair, escalate) is the transfer loop's.
"""

from __future__ import annotations

import logging
import operator
import queue
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy

from modelexpress.p2p.checksum import ROW_SUM_64, XXH3_64, RowSums, StreamingChecksums, checksums, side_stream
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.pull.backlog import Backlog
from modelexpress.p2p.pull.book import Book
from modelexpress.p2p.pull.sampling import Policy
from modelexpress.p2p.pull.sources import Source
from modelexpress.p2p.stream import Chunk, Piece

log = logging.getLogger(__name__)


class Verdicts(NamedTuple):
    """A batch of verdicts, as columns: each tensor, and whether it matched (None: not checked)."""

    names: list[str]
    matched: list[bool | None]


class Arrived(NamedTuple):
    """What one READ delivered: its pieces, the tensors they completed, and from whom. `chunk`: the
    planned chunk whose pieces these are, all of them (None: a repair, or pieces a policy filtered)."""

    pieces: list[Piece]
    complete: list[str]
    source: Source
    chunk: Chunk | None = None


class Verifier:
    """Checks a pull's tensors in a thread of its own; `collect` hands back the verdicts."""

    def __init__(self, layout: TensorLayout, book: Book, policy: Policy, linked: list[Source]) -> None:
        self.layout, self.book, self.policy, self.linked = layout, book, policy, linked
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mx-verify")
        self.results: queue.SimpleQueue[Verdicts] = queue.SimpleQueue()
        self.outstanding = 0
        """Tensors handed to the thread whose verdict has not been collected yet."""
        algorithms = {source.algorithm for source in linked}
        kind = STRATEGIES.get(algorithms.pop(), WholeTensors) if len(algorithms) == 1 else WholeTensors
        self.strategy = kind(self)

    def start(self) -> None:
        """The accumulators, made beside the first READ rather than before it; zero-byte tensors, which
        have no chunk, are checked at once."""
        if self.policy.name != "off":
            self.pool.submit(self.strategy.prepare)
        if self.linked:
            self.verify(self.book.stream.empty, None)

    def arrived(self, arrived: Arrived) -> None:
        """Bytes landed: have the tensors they completed judged as the policy says."""
        complete, source, policy = arrived.complete, arrived.source, self.policy
        if policy.name == "off":  # nothing is checked, and nothing can make it checked: in at once
            self.book.verified.update(complete)
            self.book.unchecked.update(complete)
            return
        if policy.name == "sampled" or policy.late:  # the full policy with nothing late checks them all
            self.accept([name for name in complete if not policy.checks(name)])
            self.verify([n for n in complete if n in policy.late], source)
            wanted = [p for p in arrived.pieces if policy.checks(p.name) and p.name not in policy.late]
            arrived = Arrived(wanted, [n for n in complete if policy.checks(n) and n not in policy.late], source)
        if arrived.pieces or arrived.complete:
            self.strategy.submit(arrived)

    def accept(self, names: list[str]) -> None:
        """Tensors the policy does not check: their verdict is None, collected like any other."""
        if names:
            self.outstanding += len(names)
            self.results.put(Verdicts(names, [None] * len(names)))

    def verify(self, names: list[str], source: Source | None) -> None:
        """Checksum `names`, complete in our memory, in the background (one job for them all)."""
        if not names:
            return
        self.outstanding += len(names)

        def job() -> None:
            try:
                verdicts = self.verify_now(names, source)
            except Exception:  # a failed checksum must be reported, never lost
                log.exception("verifying %d tensor(s) failed", len(names))
                verdicts = {}
            self.results.put(Verdicts(names, [verdicts.get(name, False) for name in names]))

        self.pool.submit(job)

    def verify_now(self, names: list[str], source: Source | None) -> dict[str, bool]:
        """Do the tensors' contents match the checksums of the source that delivered them (the first
        linked source when none is named)?"""
        source = source or self.linked[0]
        sums = checksums(self.layout, source.algorithm, names)
        expected = source.manifest.checksum_of
        return {name: sums[name] == expected[name] for name in names}

    def collect(self, wait: float = 0.0) -> Iterator[Verdicts]:
        """The batches of verdicts that came back; with `wait`, block up to that long for the first."""
        while True:
            try:
                batch = self.results.get(timeout=wait) if wait else self.results.get_nowait()
            except queue.Empty:
                return
            wait = 0.0
            self.outstanding -= len(batch.names)
            yield batch

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class Strategy(ABC):
    """How tensors whose sources publish one checksum algorithm are checked as their bytes land."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.book = verifier.book

    @abstractmethod
    def prepare(self) -> None:
        """In the verify thread, before the first verdict: the accumulators arriving bytes go into."""

    @abstractmethod
    def submit(self, arrived: Arrived) -> None:
        """Have the tensors `arrived` completed judged; the verdicts go to the verifier's queue."""


class WholeTensors(Strategy):
    """Each completed tensor reduced whole where it lives (sources of several algorithms)."""

    def prepare(self) -> None:
        """Nothing accumulates: a tensor is checked once it is complete."""

    def submit(self, arrived: Arrived) -> None:
        self.verifier.verify(arrived.complete, arrived.source)


class Xxh3Pieces(Strategy):
    """`xxh3-64`: pieces hashed as they line up, a planned chunk's inner tensors in one pass."""

    hashes: StreamingChecksums | None = None

    def prepare(self) -> None:
        try:
            self.hashes = StreamingChecksums(self.verifier.layout)
        except Exception:  # every verdict is then a failure, reported, never lost
            log.exception("setting up the checksums of %d tensor(s) failed", len(self.book.stream.names))

    def submit(self, arrived: Arrived) -> None:
        pieces, complete, source, chunk = arrived
        self.verifier.outstanding += len(complete)
        planned = chunk if chunk is not None and chunk.last - chunk.first >= 2 else None
        done = self.book.arrivals.positions(planned, complete) if planned is not None else None

        def job() -> None:
            hashes = self.hashes  # None: setting them up failed (logged), so every verdict is a failure
            matched: list[bool | None]
            if hashes is None:
                matched = [False] * len(complete)
            elif planned is not None and done is not None:
                matched = self._chunk_verdicts(hashes, planned, done, complete, source)
            else:
                digests = hashes.add_pieces(pieces)
                expected = source.manifest.checksum_of
                matched = [digests.get(name) == expected[name] for name in complete]
                for name in [name for name in complete if name not in digests]:
                    hashes.forget(name)  # partly hashed: its bytes will arrive again
            self.verifier.results.put(Verdicts(complete, matched))

        self.verifier.pool.submit(job)

    def _chunk_verdicts(
        self, hashes: StreamingChecksums, chunk: Chunk, done: numpy.ndarray, complete: list[str], source: Source
    ) -> list[bool | None]:
        """The verdicts of a planned chunk with tensors strictly inside it: those arrived whole and are
        hashed in one pass over columns; the first and the last piece go through the streaming path.
        `done`: the stream positions of `complete`."""
        head, tail = chunk.pieces[0], chunk.pieces[-1]
        edges = hashes.add_pieces([head, tail])
        whole = hashes.add_whole(self.book.stream.names[chunk.first + 1 : chunk.last])
        inner: list[int | None]
        if whole is None:  # some of them are not in host memory here: piece by piece
            found = hashes.add_pieces(chunk.pieces[1:-1])
            inner = [found.get(piece.name) for piece in chunk.pieces[1:-1]]
        else:
            inner = list(whole)
        with_head = bool(len(done)) and int(done[0]) == chunk.first
        with_tail = bool(len(done)) and int(done[-1]) == chunk.last
        values = [edges.get(head.name)] if with_head else []
        values += inner
        values += [edges.get(tail.name)] if with_tail else []
        for piece, completed in ((head, with_head), (tail, with_tail)):
            if completed and piece.name not in edges:
                hashes.forget(piece.name)  # partly hashed: its bytes will arrive again
        return list(map(operator.eq, values, source.expected[done].tolist()))


class Planned(NamedTuple):
    """A planned chunk that landed: its index, its runs as stream positions and byte ranges, the
    positions and names of the tensors it completed, and who delivered it."""

    chunk: int
    runs: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]
    done: numpy.ndarray
    complete: list[str]
    source: Source


class RowSumRuns(Strategy):
    """`row-sum-64`: each landed chunk's rows reduced on the target's device, on a stream of the verify
    thread's own (the READs still in flight do not wait for it), and the tensors it completed read back
    together: one host sync per batch of chunks, not per tensor. Planned chunks queue in a backlog that
    the thread drains a batch at a time; a repair or a policy's selection goes by name."""

    rowsums: RowSums | None = None

    def __init__(self, verifier: Verifier) -> None:
        super().__init__(verifier)
        self.planned: Backlog[Planned] = Backlog(verifier.pool, self.judge_planned)

    def prepare(self) -> None:
        try:
            self.rowsums = RowSums.of_stream(self.verifier.layout, self.book.stream)
        except Exception:  # every verdict is then a failure, reported, never lost
            log.exception("setting up the checksums of %d tensor(s) failed", len(self.book.stream.names))

    def submit(self, arrived: Arrived) -> None:
        pieces, complete, source, chunk = arrived
        self.verifier.outstanding += len(complete)
        if chunk is not None and chunk.first >= 0:
            done = self.book.arrivals.positions(chunk, complete)
            self.planned.add(Planned(chunk.index, self.book.stream.runs(chunk), done, complete, source))
            return

        def by_name(rowsums: RowSums) -> list[bool | None]:
            rowsums.add_pieces(pieces)
            sums = rowsums.totals(complete) if complete else {}
            expected = source.manifest.checksum_of
            return [sums.get(name) == expected[name] for name in complete]

        self.verifier.pool.submit(self._judge, complete, by_name)

    def judge_planned(self, batch: list[Planned]) -> None:
        """Every planned chunk that landed since the thread's last job: one reduction per run of
        consecutive chunks, one read-back and one comparison for them all."""

        def together(rowsums: RowSums) -> list[bool | None]:
            for consecutive in _consecutive(batch):
                columns = zip(*(planned.runs for planned in consecutive), strict=True)
                rowsums.add_runs(*(numpy.concatenate(column) for column in columns))
            done = numpy.concatenate([planned.done for planned in batch])
            expected = numpy.concatenate([planned.source.expected[planned.done] for planned in batch])
            return (rowsums.totals_at(done) == expected).tolist() if len(done) else []

        self._judge([name for planned in batch for name in planned.complete], together)

    def _judge(self, names: list[str], judge: Callable[[RowSums], list[bool | None]]) -> None:
        """In the verify thread: `judge` the accumulators on the thread's own CUDA stream and report its
        verdicts on `names`; a failure is reported as failed verdicts, never lost."""
        matched: list[bool | None]
        try:
            if self.rowsums is None:
                raise RuntimeError("the row-sum accumulators could not be set up")
            with side_stream(self.verifier.layout):
                matched = judge(self.rowsums)
        except Exception:  # a failed checksum must be reported, never lost
            log.exception("checksumming %d tensor(s) failed", len(names))
            matched = [False] * len(names)
        self.verifier.results.put(Verdicts(names, matched))


def _consecutive(batch: list[Planned]) -> Iterator[list[Planned]]:
    """The batch cut where chunk indices stop following on (their bytes stop being contiguous)."""
    group = [batch[0]]
    for planned in batch[1:]:
        if planned.chunk != group[-1].chunk + 1:
            yield group
            group = []
        group.append(planned)
    yield group


STRATEGIES: dict[str, type[Strategy]] = {XXH3_64: Xxh3Pieces, ROW_SUM_64: RowSumRuns}
"""The strategy for sources that all publish one algorithm; others get `WholeTensors`."""
