"""Pull a model's tensors from peer workers into local (pooled) memory, verified, or fall back to disk.

1. Connect to every offered source: it must be Ready, have exactly our identity, and serve a manifest
   matching our tensors by name, shape and dtype.
2. Cut our tensors into chunks and stripe the chunk READs across the sources, with a bounded number
   in flight per source and a deadline per READ.
3. Checksum each tensor piece by piece as its bytes land (so only the last piece's hash is left when
   the READs end); a mismatch re-fetches the tensor from another source.
4. A source that fails (READ error, missed deadline, status stream broken) is abandoned and its
   chunks go to the others; with none left, the caller's disk loader fills what is missing.
The target memory is written in place throughout: a retry never holds a second copy of the model.
Nothing is reported loaded unless every tensor is verified.
"""

from __future__ import annotations

import collections
import logging
import operator
import queue
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Literal, NamedTuple, get_args

import numpy
import torch

from modelexpress import metrics
from modelexpress.bulk import gc_paused
from modelexpress.p2p.arrivals import Arrivals
from modelexpress.p2p.backlog import Backlog
from modelexpress.p2p.backoff import CEILING, Backoff
from modelexpress.p2p.checksum import ROW_SUM_64, XXH3_64, RowSums, StreamingChecksums, checksums, side_stream
from modelexpress.p2p.client import SourceBusyError, WorkerClient
from modelexpress.p2p.gil import short_switch_interval
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.links import LINK_ERRORS, Deaths, PreparedSources, SourceLink, link_source
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.nixl_engine import NixlEngine, ReadHandle, TransferError
from modelexpress.p2p.notices import pulled
from modelexpress.p2p.plan import SourceMap, TensorMismatchError, match
from modelexpress.p2p.stream import Chunk, Piece, Stream, default_chunk_bytes, default_tail_bytes, make_chunks
from modelexpress.phases import Phases

log = logging.getLogger(__name__)

Fallback = Callable[[dict[str, torch.Tensor], list[str]], None]
"""Fills the named tensors of the dict in place (e.g. from disk)."""
Progress = Callable[[int, int], None]
Discover = Callable[[], list[str]]
"""Endpoints of the Ready sources now (a fresh registry lookup)."""


Verification = Literal["full", "sampled", "off"]
VERIFICATIONS: tuple[str, ...] = get_args(Verification)


class PullError(RuntimeError):
    """The tensors could not be obtained; nothing is loaded."""


class NoSourceError(PullError):
    """No usable source and no fallback."""


@dataclass(frozen=True)
class PullOptions:
    chunk_bytes: int | None = None
    """Bytes per READ (None: `default_chunk_bytes` of the target layout)."""
    max_inflight: int = 4
    transfer_timeout: float = 60.0
    connect_timeout: float = 10.0
    expected_pods: dict[str, str] = field(default_factory=dict)
    """endpoint -> pod UID the registry recorded there: a source answering for another pod (its pod
    was replaced and the address reused) is refused, never taken for its previous incarnation."""
    verification: Verification = "full"
    """full: every tensor's checksum; sampled: a random `sample_fraction` of the bytes, and every tensor
    once one sampled tensor fails; off: none (the bytes are trusted as they arrive)."""
    sample_fraction: float = 0.1
    busy_wait: float = 0.0
    """Seconds to wait, asking for sources again, when every source is busy (needs `discover`)."""
    max_sources: int = 0
    """Sources striped over at once, taken in the order given (0: all); the others are a reserve."""

    def __post_init__(self) -> None:
        if self.verification not in VERIFICATIONS:
            raise ValueError(f"verification {self.verification!r}: expected one of {', '.join(VERIFICATIONS)}")
        if not 0 < self.sample_fraction <= 1:
            raise ValueError(f"sample_fraction {self.sample_fraction}: expected a fraction in (0, 1]")


@dataclass
class PullResult:
    bytes: int
    seconds: float
    sources: list[str]
    failed_sources: dict[str, str]
    retried_chunks: int = 0
    refetched_tensors: int = 0
    fell_back: list[str] = field(default_factory=list)
    verification: str = "full"
    """The policy that held at the end (a sampled pull that met a corrupt tensor ends `full`)."""
    verified_bytes: int = 0
    """Bytes of the pulled tensors whose checksums were checked."""
    unchecked_tensors: int = 0
    """Pulled tensors the policy accepted without a check."""
    phases: Phases = field(default_factory=Phases)
    """Seconds in link, manifest, transfer, verify and disk (the tensors no source delivered)."""

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class _InFlight:
    chunk: int
    read: ReadHandle
    posted: float
    deadline: float


@dataclass
class _Source:
    endpoint: str
    client: WorkerClient
    manifest: Manifest
    remote_agent: str
    runs: SourceMap
    region_kinds: dict[int, tuple[str, int]]
    algorithm: str = XXH3_64
    inflight: list[_InFlight] = field(default_factory=list)
    failure: str | None = None
    served: int = 0

    @cached_property
    def expected(self) -> numpy.ndarray:
        """The published checksums in our stream order (made by the verify thread on first use)."""
        expected: numpy.ndarray = self.manifest.columns.checksums[self.runs.remote_rows]
        return expected


class Verdicts(NamedTuple):
    """A batch of verdicts, as columns: each tensor, and whether it matched (None: not checked)."""

    names: list[str]
    matched: list[bool | None]


class _Arrived(NamedTuple):
    """What one READ delivered: its pieces, the tensors they completed, and from whom. `chunk`: the
    planned chunk whose pieces these are, all of them (None: a repair, or pieces a policy filtered)."""

    pieces: list[Piece]
    complete: list[str]
    source: _Source
    chunk: Chunk | None = None


class _Planned(NamedTuple):
    """A planned chunk that landed, for row-sum verification: its index, its runs as stream positions
    and byte ranges, the positions and names of the tensors it completed, and who delivered it."""

    chunk: int
    runs: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]
    done: numpy.ndarray
    complete: list[str]
    source: _Source


def _consecutive(batch: list[_Planned]) -> Iterator[list[_Planned]]:
    """The batch cut where chunk indices stop following on (their bytes stop being contiguous)."""
    group = [batch[0]]
    for planned in batch[1:]:
        if planned.chunk != group[-1].chunk + 1:
            yield group
            group = []
        group.append(planned)
    yield group


@dataclass
class _State:
    """Book-keeping of one pull: chunks pending, in which tensors, delivered by whom, verified."""

    chunks: list[Chunk]
    stream: Stream
    total: int = field(init=False)
    arrivals: Arrivals = field(init=False)
    pending: collections.deque[int] = field(init=False)
    delivered_by: dict[int, _Source] = field(default_factory=dict)
    # repair chunks carry one tensor's bytes only and may come from one source only
    pinned: dict[int, str] = field(default_factory=dict)
    tried: collections.defaultdict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    verified: set[str] = field(default_factory=set)
    # xxh3 is fed piece by piece as bytes land; other algorithms reduce whole tensors where they live
    streaming: bool = True
    # row-sum-64 sources: block sums accumulated per arrived chunk, one host sync per batch of verdicts
    row_sums: bool = False
    # the accumulators of either kind, one entry per tensor: built by the verify thread's first job, so
    # that they are made beside the first READ rather than before it, and used by that thread only
    hashes: StreamingChecksums | None = None
    rowsums: RowSums | None = None
    # tensors to check (None: all); the rest are accepted as they arrive, into `unchecked`
    sample: set[str] | None = None
    unchecked: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)
    policy: str = "full"
    # verdicts arrive here from the checksum thread, a batch at a time (one wake-up of the pull per
    # batch, not per tensor)
    results: queue.SimpleQueue[Verdicts] = field(default_factory=queue.SimpleQueue)
    outstanding: int = 0
    # when the last chunk landed: READs end there, and what verification does afterwards is its own phase
    last_arrival: float | None = None
    # how long the loop sleeps while READs are in flight, from how long they take here
    backoff: Backoff = field(default_factory=Backoff)
    # row-sum-64: planned chunks that landed, verified a batch at a time (p2p/backlog.py)
    planned_row_sums: Backlog[_Planned] | None = None
    refetched: int = 0
    done_bytes: int = 0

    def checks(self, name: str) -> bool:
        return self.policy != "off" and (self.sample is None or name in self.sample)

    def __post_init__(self) -> None:
        self.total = sum(c.nbytes for c in self.chunks)  # repair chunks re-read bytes, they add none
        self.arrivals = Arrivals(self.chunks, self.stream)
        self.pending = collections.deque(c.index for c in self.chunks)


class _Pull:
    def __init__(
        self,
        layout: TensorLayout,
        identity: WorkerIdentity,
        engine: NixlEngine,
        options: PullOptions,
        progress: Progress | None,
        deaths: Deaths | None = None,
        phases: Phases | None = None,
    ) -> None:
        self.phases = phases if phases is not None else Phases()
        self.layout = layout
        self.identity = identity
        self.engine = engine
        self.options = options
        self.progress = progress
        self.chunk_bytes = options.chunk_bytes or default_chunk_bytes(layout)
        self.stream: Stream | None = None
        self.local_kinds = {r.id: (r.kind, r.device_id) for r in layout.regions}
        self.sources: list[_Source] = []
        self.failed: dict[str, str] = {}
        self.busy: dict[str, str] = {}  # endpoint -> why it turned this target away (it serves enough others)
        self.reserve: list[str] = []  # ranked endpoints not linked yet: max_sources were linked before them
        self.prepared: PreparedSources | None = None
        self.corrupt: dict[str, list[str]] = {}  # endpoint -> tensors it delivered that failed their checksum
        self.retried = 0
        self.mismatches: list[TensorMismatchError] = []
        self.deaths = deaths or Deaths()

    # --- sources --------------------------------------------------------------------------------

    def connect(self, endpoints: list[str], prepared: PreparedSources | None = None) -> None:
        """Link each source (or take the link made ahead of time) and match its tensors to ours, best
        first, until `max_sources` are linked; the rest wait in reserve for one that fails."""
        if prepared is not None:
            self.prepared = prepared
        with gc_paused():  # a manifest of thousands of entries, matched: see run()
            self._connect(endpoints, prepared)

    def _connect(self, endpoints: list[str], prepared: PreparedSources | None) -> None:
        for n, endpoint in enumerate(endpoints):
            if self.options.max_sources and len(self._alive()) >= self.options.max_sources:
                self.reserve.extend(e for e in endpoints[n:] if e not in self.reserve)
                break
            try:
                with self.phases.timing("link"):
                    link = prepared.take(endpoint) if prepared is not None else None
                    if link is None:
                        link = link_source(
                            endpoint,
                            self.identity,
                            self.engine,
                            self.deaths,
                            self.options.connect_timeout,
                            self.options.expected_pods.get(endpoint),
                        )
                with self.phases.timing("manifest"):
                    source = self._matched(link)
            except SourceBusyError as exc:
                self.busy[endpoint] = str(exc)
                metrics.SOURCE_FAILURES.labels("busy").inc()
                log.info("%s", exc)
                continue
            except (*LINK_ERRORS, TensorMismatchError) as exc:
                if isinstance(exc, TensorMismatchError):
                    self.mismatches.append(exc)
                self.failed[endpoint] = str(exc)
                metrics.SOURCE_FAILURES.labels("connect").inc()
                log.warning("source %s not used: %s", endpoint, exc)
                continue
            self.sources.append(source)

    def wait_while_busy(self, discover: Discover | None, patience: float) -> None:
        """While no source is usable and some turned this target away as busy, wait (backing off, with
        jitter so a burst does not come back at once) and try the sources `discover` finds now: targets
        that finished meanwhile are sources too. Gives up after `patience` seconds."""
        deadline = time.monotonic() + patience
        pause = 0.2
        while not self.sources and self.busy and discover is not None and time.monotonic() < deadline:
            log.info("all %d source(s) of %s rank %d are busy; waiting for one (up to %.0fs more)",
                     len(self.busy), self.identity.model_name, self.identity.rank, deadline - time.monotonic())  # fmt: skip
            with self.phases.timing("link"):
                time.sleep(min(pause * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 5.0)
            self.busy.clear()
            self.connect(discover())

    def _matched(self, link: SourceLink) -> _Source:
        """The linked source with its tensors matched to ours; its link is dropped if they differ."""
        try:
            rows = match(self.layout, link.manifest)
        except TensorMismatchError:
            self.engine.remove_remote(link.remote_agent)
            link.client.close()
            raise
        return _Source(
            link.endpoint,
            link.client,
            link.manifest,
            link.remote_agent,
            SourceMap(self.layout, link.manifest, rows, self._stream()),
            {r.id: (r.kind, r.device_id) for r in link.manifest.regions},
            link.manifest.checksum_algorithm,
        )

    @cached_property
    def sizes(self) -> dict[str, int]:
        """Each tensor's bytes by name (for sampling, coverage, repairs and partial reports)."""
        return {p.spec.name: p.spec.nbytes for p in self.layout.placements}

    def _stream(self) -> Stream:
        """The local byte stream in columns, made on first use (a pull that finds no source needs none)."""
        if self.stream is None:
            self.stream = Stream(self.layout)
        return self.stream

    def _alive(self) -> list[_Source]:
        return [s for s in self.sources if s.failure is None]

    def _fail_source(self, source: _Source, reason: str, requeue: collections.deque[int]) -> None:
        if source.failure is not None:
            return
        source.failure = reason
        self.failed[source.endpoint] = reason
        metrics.SOURCE_FAILURES.labels("transfer").inc()
        log.warning("abandoning source %s: %s", source.endpoint, reason)
        for flight in source.inflight:
            self.engine.release(flight.read)
            requeue.appendleft(flight.chunk)
        self.retried += len(source.inflight)
        source.inflight.clear()
        while self.reserve and len(self._alive()) < (self.options.max_sources or len(self.sources) + 1):
            endpoint = self.reserve.pop(0)
            log.info("linking reserve source %s in place of %s", endpoint, source.endpoint)
            self.connect([endpoint], self.prepared)

    # --- transfer -------------------------------------------------------------------------------

    def _post(self, source: _Source, chunk: Chunk) -> ReadHandle:
        runs = source.runs.descriptors(chunk)
        stream = self._stream()
        local_kind, local_dev = self.local_kinds[int(stream.region_ids[stream.span(chunk)[0]])]
        remote_kind, remote_dev = source.region_kinds[source.runs.remote_region(chunk)]
        return self.engine.start_read(
            source.remote_agent,
            [(r.local_address, r.remote_address, r.length) for r in runs],
            local_kind,
            local_dev,
            remote_kind,
            remote_dev,
        )

    def run(self, fallback: Fallback | None) -> PullResult:
        start = time.perf_counter()
        # Thousands of small book-keeping objects, none in a cycle: the allocations would set off the
        # cyclic collector, and a full pass walks every object of the process (in a serving engine,
        # millions: hundreds of milliseconds, once seen inside one match of 4096 tensors). Paused while
        # the pull plans and moves bytes; a disk fallback runs with it on.
        with gc_paused(), short_switch_interval():  # the poster waits less for the checksum thread's GIL
            state = self._transfer()
        missing = self._complete_with_fallback(state, fallback)
        return self._report(state, missing, start)

    def _transfer(self) -> _State:
        """Plan the chunks and move them, verified, until every tensor is in or nothing can progress."""
        policy = self.options.verification
        with self.phases.timing("manifest"):
            state = _State(
                make_chunks(self.layout, self.chunk_bytes, self._stream(), default_tail_bytes(self.layout)),
                self._stream(),
                streaming=all(s.algorithm == XXH3_64 for s in self.sources),
                policy=policy,
                sample=self._sample() if policy == "sampled" else None,
                row_sums=policy != "off"
                and bool(self.sources)
                and all(s.algorithm == ROW_SUM_64 for s in self.sources),
            )
        moving = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mx-verify")
        if state.row_sums:
            state.planned_row_sums = Backlog(pool, partial(self._verify_planned_row_sums, state))
        try:
            if policy != "off":
                pool.submit(self._prepare_checksums, state)
            # zero-byte tensors have no chunk: verify them at once
            if self.sources:
                self._submit_verification(state, pool, state.stream.empty, None)
            while True:
                self._reap_dead(state)
                progressed = self._post_reads(state)
                progressed |= self._poll_reads(state, pool)
                self._collect_verifications(state, pool)
                if self._finished(state):
                    break
                if progressed:
                    state.backoff.reset()
                    continue
                posted = [flight.posted for source in self._alive() for flight in source.inflight]
                if posted:  # back off, at most a fraction of a READ's time (p2p/backoff.py)
                    time.sleep(state.backoff.next(time.monotonic() - min(posted)))
                else:  # only verdicts are awaited: wake as the first one comes, not at the next tick
                    self._collect_verifications(state, pool, wait=CEILING)
        finally:
            pool.shutdown(wait=True)
            ended = time.perf_counter()
            last = state.last_arrival if state.last_arrival is not None else ended
            self.phases.add("transfer", last - moving)
            self.phases.add("verify", ended - last)
        return state

    def _report(self, state: _State, missing: list[str], start: float) -> PullResult:
        pulled = state.stream.total if self._all_verified(state) else sum(map(self.sizes.__getitem__, state.verified))
        if not state.unchecked:
            checked = pulled
        elif len(state.unchecked) == len(state.verified):  # policy off
            checked = 0
        else:
            checked = pulled - sum(map(self.sizes.__getitem__, state.unchecked))
        metrics.PULL_BYTES.inc(pulled)
        metrics.PULL_VERIFIED_BYTES.labels(state.policy).inc(checked)
        return PullResult(
            bytes=pulled,
            seconds=time.perf_counter() - start,
            sources=[s.endpoint for s in self.sources if s.served],
            failed_sources=self._failure_reasons(),
            retried_chunks=self.retried,
            refetched_tensors=state.refetched,
            fell_back=missing,
            verification=state.policy
            if state.policy != "sampled"
            else f"sampled ({self._coverage(state):.0%} of bytes)",
            verified_bytes=checked,
            unchecked_tensors=len(state.unchecked),
            phases=self.phases,
        )

    def _sample(self) -> set[str]:
        """A random set of tensors holding at least `sample_fraction` of the bytes (new for every pull)."""
        names = [p.spec.name for p in self.layout.placements]
        random.SystemRandom().shuffle(names)
        goal = self.options.sample_fraction * self.layout.total_bytes
        chosen: set[str] = set()
        covered = 0
        for name in names:
            if covered >= goal and chosen:
                break
            chosen.add(name)
            covered += self.sizes[name]
        return chosen

    def _coverage(self, state: _State) -> float:
        sampled = sum(map(self.sizes.__getitem__, state.sample or ()))
        return sampled / self.layout.total_bytes if self.layout.total_bytes else 1.0

    def _verify_many(self, names: list[str], source: _Source | None) -> dict[str, bool]:
        """Do the tensors' contents match the checksums of the source that delivered them (batched)?"""
        source = source or self.sources[0]
        sums = checksums(self.layout, source.algorithm, names)
        expected = source.manifest.checksum_of
        return {name: sums[name] == expected[name] for name in names}

    def _submit_verification(
        self, state: _State, pool: ThreadPoolExecutor, names: list[str], source: _Source | None
    ) -> None:
        """Checksum `names` in the background (one job per batch); results come back through a queue."""
        if not names:
            return
        state.outstanding += len(names)

        def job() -> None:
            try:
                verdicts = self._verify_many(names, source)
            except Exception:  # a failed checksum must be reported, never lost
                log.exception("verifying %d tensor(s) failed", len(names))
                verdicts = {}
            state.results.put(Verdicts(names, [verdicts.get(name, False) for name in names]))

        pool.submit(job)

    def _reap_dead(self, state: _State) -> None:
        dead = self.deaths.snapshot()
        for source in self._alive():
            if source.endpoint in dead:
                self._fail_source(source, dead[source.endpoint], state.pending)

    def _post_reads(self, state: _State) -> bool:
        """Hand out pending chunks, at most one per source per call (striping), within each in-flight limit.

        One per call, because host transports copy inside the post itself: polling between posts
        lets each arrived chunk's verification overlap the next copy. Asynchronous transports (GPU,
        RDMA) still fill their in-flight window, as the loop comes straight back while posts succeed.
        """
        self._repin_orphaned_repairs(state)
        posted = False
        if state.pending:
            for source in self._alive():
                if len(source.inflight) >= self.options.max_inflight:
                    continue
                index = next(
                    (i for i in state.pending if state.pinned.get(i, source.endpoint) == source.endpoint), None
                )
                if index is None:
                    continue
                state.pending.remove(index)
                try:
                    read = self._post(source, state.chunks[index])
                except TransferError as exc:
                    state.pending.appendleft(index)
                    self._fail_source(source, str(exc), state.pending)
                    continue
                now = time.monotonic()
                source.inflight.append(_InFlight(index, read, now, now + self.options.transfer_timeout))
                posted = True
        return posted

    def _poll_reads(self, state: _State, pool: ThreadPoolExecutor) -> bool:
        completed = False
        now = time.monotonic()
        for source in self._alive():
            for flight in list(source.inflight):
                status = self.engine.state(flight.read)
                if status == "DONE":
                    state.backoff.landed(now - flight.posted)
                    self.engine.release(flight.read)
                    source.inflight.remove(flight)
                    self._chunk_arrived(state, state.chunks[flight.chunk], source, pool)
                    completed = True
                elif status == "ERR" or now > flight.deadline:
                    metrics.CHUNKS.labels("failed").inc()
                    reason = (
                        "READ failed"
                        if status == "ERR"
                        else f"READ missed its {self.options.transfer_timeout}s deadline"
                    )
                    self._fail_source(source, reason, state.pending)
                    break
        return completed

    def _chunk_arrived(self, state: _State, chunk: Chunk, source: _Source, pool: ThreadPoolExecutor) -> None:
        metrics.CHUNKS.labels("done").inc()
        state.delivered_by[chunk.index] = source
        source.served += chunk.nbytes
        state.done_bytes += chunk.nbytes
        state.last_arrival = time.perf_counter()
        if self.progress:
            self.progress(min(state.done_bytes, state.total), state.total)
        complete = state.arrivals.arrive(chunk)
        if complete is not None:  # None: nothing waited for this chunk any more
            self._submit_pieces(state, pool, _Arrived(list(chunk.pieces), complete, source, chunk))

    def _submit_pieces(self, state: _State, pool: ThreadPoolExecutor, arrived: _Arrived) -> None:
        """Hash the arrived pieces in the background; the tensors they completed get their verdict
        through the results queue. Tensors the policy does not check are accepted as they complete."""
        complete, source = arrived.complete, arrived.source
        if state.policy == "off":  # nothing is checked, and nothing can make it checked: in at once
            state.verified.update(complete)
            state.unchecked.update(complete)
            return
        if state.policy == "sampled" or state.late:  # the full policy with nothing late checks them all
            accepted = [name for name in complete if not state.checks(name)]
            if accepted:
                state.outstanding += len(accepted)
                state.results.put(Verdicts(accepted, [None] * len(accepted)))
            late = [n for n in complete if n in state.late]
            self._submit_verification(state, pool, late, source)
            arrived = _Arrived(
                [p for p in arrived.pieces if state.checks(p.name) and p.name not in state.late],
                [n for n in complete if state.checks(n) and n not in state.late],
                source,
            )
        if not arrived.pieces and not arrived.complete:
            return
        if state.row_sums:
            self._submit_row_sums(state, pool, arrived)
        elif not state.streaming:
            self._submit_verification(state, pool, arrived.complete, source)
        else:
            self._submit_xxh3(state, pool, arrived)

    def _submit_xxh3(self, state: _State, pool: ThreadPoolExecutor, arrived: _Arrived) -> None:
        """xxh3-64: the pieces are hashed as they line up; a planned chunk's inner tensors in one pass."""
        pieces, complete, source, chunk = arrived
        state.outstanding += len(complete)
        planned = chunk if chunk is not None and chunk.last - chunk.first >= 2 else None
        done = state.arrivals.positions(planned, complete) if planned is not None else None

        def job() -> None:
            hashes = state.hashes  # None: setting them up failed (logged), so every verdict is a failure
            matched: list[bool | None]
            if hashes is None:
                matched = [False] * len(complete)
            elif planned is not None and done is not None:
                matched = self._xxh3_chunk_verdicts(state, hashes, planned, done, complete, source)
            else:
                digests = hashes.add_pieces(pieces)
                expected = source.manifest.checksum_of
                matched = [digests.get(name) == expected[name] for name in complete]
                for name in [name for name in complete if name not in digests]:
                    hashes.forget(name)  # partly hashed: its bytes will arrive again
            state.results.put(Verdicts(complete, matched))

        pool.submit(job)

    def _xxh3_chunk_verdicts(
        self,
        state: _State,
        hashes: StreamingChecksums,
        chunk: Chunk,
        done: numpy.ndarray,
        complete: list[str],
        source: _Source,
    ) -> list[bool | None]:
        """The verdicts of a planned chunk with tensors strictly inside it: those arrived whole and are
        hashed in one pass over columns; the first and the last piece go through the streaming path.
        `done`: the stream positions of `complete`."""
        head, tail = chunk.pieces[0], chunk.pieces[-1]
        edges = hashes.add_pieces([head, tail])
        whole = hashes.add_whole(state.stream.names[chunk.first + 1 : chunk.last])
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

    def _prepare_checksums(self, state: _State) -> None:
        """The verify thread's first job: the accumulators the arriving pieces are fed to."""
        try:
            if state.row_sums:
                state.rowsums = RowSums.of_stream(self.layout, state.stream)
            elif state.streaming:
                state.hashes = StreamingChecksums(self.layout)
        except Exception:  # every verdict that needed them is then a failure, reported, never lost
            log.exception("setting up the checksums of %d tensor(s) failed", len(state.stream.names))

    def _submit_row_sums(self, state: _State, pool: ThreadPoolExecutor, arrived: _Arrived) -> None:
        """row-sum-64: the chunk's rows are reduced on the target's device as it lands, on a stream of
        the verify thread's own (the READs still in flight do not wait for it), and the tensors it
        completed are read back together: one host sync per chunk, not per tensor. A planned chunk
        goes as columns of stream positions into the backlog (`_verify_planned_row_sums`); a repair
        or a policy's selection goes by name."""
        pieces, complete, source, chunk = arrived
        state.outstanding += len(complete)
        if chunk is not None and chunk.first >= 0 and state.planned_row_sums is not None:
            runs = state.stream.runs(chunk)
            state.planned_row_sums.add(
                _Planned(chunk.index, runs, state.arrivals.positions(chunk, complete), complete, source)
            )
            return

        def by_name(rowsums: RowSums) -> list[bool | None]:
            rowsums.add_pieces(pieces)
            sums = rowsums.totals(complete) if complete else {}
            expected = source.manifest.checksum_of
            return [sums.get(name) == expected[name] for name in complete]

        pool.submit(self._judge_row_sums, state, complete, by_name)

    def _verify_planned_row_sums(self, state: _State, batch: list[_Planned]) -> None:
        """The verify thread's job for every planned chunk that landed since its last one: one
        reduction per run of consecutive chunks, one read-back and one comparison for them all."""

        def together(rowsums: RowSums) -> list[bool | None]:
            for consecutive in _consecutive(batch):
                columns = zip(*(planned.runs for planned in consecutive), strict=True)
                rowsums.add_runs(*(numpy.concatenate(column) for column in columns))
            done = numpy.concatenate([planned.done for planned in batch])
            expected = numpy.concatenate([planned.source.expected[planned.done] for planned in batch])
            return (rowsums.totals_at(done) == expected).tolist() if len(done) else []

        self._judge_row_sums(state, [name for planned in batch for name in planned.complete], together)

    def _judge_row_sums(self, state: _State, names: list[str], judge: Callable[[RowSums], list[bool | None]]) -> None:
        """In the verify thread: `judge` the row-sum accumulators, on the thread's own CUDA stream,
        and report its verdicts on `names`; a failure is reported as failed verdicts, never lost."""
        matched: list[bool | None]
        try:
            rowsums = state.rowsums
            if rowsums is None:
                raise RuntimeError("the row-sum accumulators could not be set up")
            with side_stream(self.layout):
                matched = judge(rowsums)
        except Exception:  # a failed checksum must be reported, never lost
            log.exception("checksumming %d tensor(s) failed", len(names))
            matched = [False] * len(names)
        state.results.put(Verdicts(names, matched))

    def _collect_verifications(self, state: _State, pool: ThreadPoolExecutor, wait: float = 0.0) -> None:
        """Act on the verdicts that came back; with `wait`, block up to that long for the first one."""
        while True:
            try:
                batch = state.results.get(timeout=wait) if wait else state.results.get_nowait()
            except queue.Empty:
                return
            wait = 0.0
            state.outstanding -= len(batch.names)
            if batch.matched.count(True) == len(batch.matched):  # the usual batch: all in, in one step
                state.verified.update(batch.names)
                continue
            for name, ok in zip(*batch, strict=True):
                if ok:
                    state.verified.add(name)
                elif ok is None:
                    self._accept_unchecked(state, pool, name)
                else:
                    self._checksum_failed(state, pool, name)

    def _accept_unchecked(self, state: _State, pool: ThreadPoolExecutor, name: str) -> None:
        if state.checks(name):  # accepted unchecked before an escalation that it now falls under
            self._submit_verification(state, pool, [name], self._deliverer(state, name))
            return
        state.verified.add(name)
        state.unchecked.add(name)

    def _checksum_failed(self, state: _State, pool: ThreadPoolExecutor, name: str) -> None:
        if state.policy == "sampled":
            self._escalate(state, pool)
        metrics.CHECKSUM_MISMATCHES.inc()
        state.refetched += 1
        delivered = state.delivered_by
        implicated = {delivered[i].endpoint for i in state.arrivals.chunks_of(name) if i in delivered}
        for endpoint in implicated:
            self.corrupt.setdefault(endpoint, []).append(name)
        state.tried[name] |= implicated if len(implicated) == 1 else set()
        self._schedule_repair(state, name, implicated)

    def _escalate(self, state: _State, pool: ThreadPoolExecutor) -> None:
        """A sampled tensor failed: its source cannot be trusted with the rest, so every tensor is now
        checked, those accepted unchecked included (any that fails is fetched again)."""
        log.warning("a sampled tensor failed its checksum; verifying every tensor of this pull")
        # unsampled tensors part of which has arrived unhashed: checked whole once complete
        state.late = {name for name in state.arrivals.partly_arrived() if not state.checks(name)}
        state.policy, state.sample = "full", None
        accepted, state.unchecked = sorted(state.unchecked), set()
        state.verified -= set(accepted)
        by_source: dict[str, tuple[_Source | None, list[str]]] = {}
        for name in accepted:
            deliverer = self._deliverer(state, name)
            by_source.setdefault(deliverer.endpoint if deliverer else "", (deliverer, []))[1].append(name)
        for deliverer, names in by_source.values():
            self._submit_verification(state, pool, names, deliverer)

    def _deliverer(self, state: _State, name: str) -> _Source | None:
        """The source that delivered the tensor's first chunk (whose checksum it is checked against)."""
        return state.delivered_by.get(min(state.arrivals.chunks_of(name), default=-1))

    def _schedule_repair(self, state: _State, name: str, implicated: set[str]) -> None:
        """Fetch the whole tensor again from one source, unimplicated sources first; give up when none is left.

        Only this tensor's bytes are re-read, so tensors already verified are never overwritten.
        """
        alive = [s.endpoint for s in self._alive() if s.endpoint not in state.tried[name]]
        candidates = sorted(alive, key=lambda ep: ep in implicated)
        if not candidates:
            log.warning("no source left to fetch %s from; it will come from the fallback", name)
            state.arrivals.drop(name)
            return
        chosen = candidates[0]
        state.tried[name].add(chosen)
        log.warning("checksum mismatch on %s; fetching it again from %s", name, chosen)
        nbytes = self.sizes[name]
        indices: set[int] = set()
        for start in range(0, nbytes, self.chunk_bytes):
            chunk = Chunk.of(len(state.chunks), (Piece(name, start, min(self.chunk_bytes, nbytes - start)),))
            state.chunks.append(chunk)
            state.pinned[chunk.index] = chosen
            state.pending.append(chunk.index)
            indices.add(chunk.index)
        state.arrivals.refetch(name, indices)

    def _repin_orphaned_repairs(self, state: _State) -> None:
        """A repair pinned to a source that has since failed moves to the next candidate (or is dropped).
        Asked before every post: it looks at the pinned repairs only, not at every pending chunk."""
        if not state.pinned:
            return
        alive = {s.endpoint for s in self._alive()}
        stranded = [i for i, endpoint in state.pinned.items() if endpoint not in alive]
        if not stranded:
            return
        for i in stranded:  # delivered already, or dropped below: pinned to no one any more
            del state.pinned[i]
        pending = set(state.pending)
        orphaned: dict[str, set[int]] = collections.defaultdict(set)
        for i in stranded:
            if i in pending:
                orphaned[state.chunks[i].pieces[0].name].add(i)
        for name, dropped in orphaned.items():
            state.pending = collections.deque(i for i in state.pending if i not in dropped)
            self._schedule_repair(state, name, set())

    def _finished(self, state: _State) -> bool:
        """Everything verified, or nothing left that could make progress."""
        if not state.pending and not state.outstanding and all(not s.inflight for s in self.sources):
            return True
        return not self._alive() and not state.outstanding

    def _all_verified(self, state: _State) -> bool:
        return len(state.verified) == len(self.layout.placements)  # verified holds names of ours only

    def _complete_with_fallback(self, state: _State, fallback: Fallback | None) -> list[str]:
        if self._all_verified(state):
            return []
        missing = [p.spec.name for p in self.layout.placements if p.spec.name not in state.verified]
        if fallback is None:
            raise NoSourceError(
                f"{len(missing)} of {len(self.layout.placements)} tensors could not be pulled "
                f"(sources: {self._describe_failures()}) and no fallback loader was given"
            )
        log.warning("pulling %d tensor(s) failed; loading them with the fallback loader", len(missing))
        with self.phases.timing("disk"):
            fallback(self.layout.tensors, missing)
        if self.sources and self.options.verification != "off":
            with self.phases.timing("verify"):
                verdicts = self._verify_many(missing, None)
            bad = [n for n, ok in verdicts.items() if not ok]
            if bad:
                raise PullError(
                    f"{len(bad)} tensor(s) loaded by the fallback loader differ from the sources' checksums, "
                    f"e.g. {bad[0]}: the disk copy is another model or revision"
                )
        return missing

    def _failure_reasons(self) -> dict[str, str]:
        """Why each source did not deliver everything: its failure, and the tensors it served that failed
        verification."""
        reasons = {**self.busy, **self.failed}
        for endpoint, names in self.corrupt.items():
            corrupt = f"{len(names)} tensor(s) failed checksum verification (e.g. {names[0]})"
            reasons[endpoint] = f"{reasons[endpoint]}; {corrupt}" if endpoint in reasons else corrupt
        return reasons

    def _describe_failures(self) -> str:
        return "; ".join(f"{ep}: {why}" for ep, why in self._failure_reasons().items()) or "none offered"

    def close(self) -> None:
        for source in self.sources:
            for flight in source.inflight:
                self.engine.release(flight.read)
            if source.failure is not None:
                self.engine.remove_remote(source.remote_agent)  # healthy peers keep their connection
            elif source.served:
                self.engine.notify(source.remote_agent, pulled(source.served))
            source.client.close()


def pull(
    layout: TensorLayout,
    identity: WorkerIdentity,
    endpoints: list[str],
    engine: NixlEngine,
    options: PullOptions | None = None,
    fallback: Fallback | None = None,
    progress: Progress | None = None,
    prepared: PreparedSources | None = None,
    discover: Discover | None = None,
    phases: Phases | None = None,
) -> PullResult:
    """Fill `layout`'s tensors from the sources at `endpoints` (or the fallback); verified or an exception.

    `engine` must already have `layout` registered. `prepared`: the sources linked ahead of time with
    the same engine (`links.prepare_sources`), taken instead of linking them now. `discover`: asks the
    registry again for Ready sources, so that a target every source turned away as busy waits for
    one (`PullOptions.busy_wait`) instead of falling back at once. `phases`: where the pull adds the
    seconds of its phases, failed or not (a load's own, observed by whoever made it); without one the
    pull observes its phases itself.
    """
    if prepared is not None and prepared.engine is not engine:
        raise ValueError("the prepared sources were linked with another NIXL engine")
    started = time.perf_counter()
    deaths = prepared.deaths if prepared is not None else None
    own = phases is None
    job = _Pull(layout, identity, engine, options or PullOptions(), progress, deaths, phases)
    try:
        job.connect(endpoints, prepared)
        job.wait_while_busy(discover, job.options.busy_wait)
        if not job.sources:
            if job.mismatches and fallback is None:
                raise job.mismatches[0]
            if fallback is None:
                raise NoSourceError(
                    f"no usable source for {identity.model_name} rank {identity.rank}: {job._describe_failures()}"
                )
        result = job.run(fallback)
    except Exception:
        metrics.PULLS.labels("failed").inc()
        raise
    finally:
        job.close()
        if prepared is not None:
            prepared.close()
        metrics.PULL_SECONDS.observe(time.perf_counter() - started)
        if own:
            metrics.observe_phases(job.phases)
    metrics.PULLS.labels("fallback" if result.fell_back else "ok").inc()
    return result
