"""The transfer loop of one pull, and `pull` itself: the only module that calls the others.

`pull` links the sources, plans the chunks, then the loop posts READs striped over the sources, polls
them, hands what landed to the verifier and acts on its verdicts (accept, repair, escalate a sampled
policy) until every tensor is verified or nothing can progress; the fallback fills what is missing.
"""

from __future__ import annotations

import functools
import logging
import time

from modelexpress import metrics
from modelexpress.bulk import gc_paused
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.nixl_engine import NixlEngine, ReadHandle, TransferError
from modelexpress.p2p.pull.backoff import CEILING
from modelexpress.p2p.pull.book import Book
from modelexpress.p2p.pull.gil import short_switch_interval
from modelexpress.p2p.pull.links import PreparedSources
from modelexpress.p2p.pull.options import (
    Discover,
    Fallback,
    NoSourceError,
    Progress,
    PullError,
    PullOptions,
    PullResult,
)
from modelexpress.p2p.pull.repairs import Repairs
from modelexpress.p2p.pull.sampling import Policy
from modelexpress.p2p.pull.sources import InFlight, Source, Sources
from modelexpress.p2p.pull.verify import Arrived, Verdicts, Verifier
from modelexpress.p2p.stream import Chunk, Stream, default_chunk_bytes, default_tail_bytes, make_chunks
from modelexpress.phases import Phases

log = logging.getLogger(__name__)


class Transfer:
    """The READs of one planned pull and what follows from their verdicts."""

    def __init__(
        self,
        layout: TensorLayout,
        engine: NixlEngine,
        options: PullOptions,
        sources: Sources,
        book: Book,
        policy: Policy,
        chunk_bytes: int,
        progress: Progress | None,
        phases: Phases,
    ) -> None:
        self.layout, self.engine, self.options, self.progress, self.phases = layout, engine, options, progress, phases
        self.sources, self.book, self.policy = sources, book, policy
        self.verifier = Verifier(layout, book, policy, sources.linked)
        self.repairs = Repairs(book, sources, chunk_bytes)
        self.local_kinds = {r.id: (r.kind, r.device_id) for r in layout.regions}

    def run(self) -> None:
        """Move the chunks, verified, until every tensor is in or nothing can progress."""
        book, verifier = self.book, self.verifier
        moving = time.perf_counter()
        try:
            verifier.start()
            while True:
                self.sources.reap_dead(book.pending)
                progressed = self._post_reads()
                progressed |= self._poll_reads()
                self._collect()
                if self._finished():
                    break
                if progressed:
                    book.backoff.reset()
                    continue
                posted = [flight.posted for source in self.sources.alive() for flight in source.inflight]
                if posted:  # back off, at most a fraction of a READ's time (backoff.py)
                    time.sleep(book.backoff.next(time.monotonic() - min(posted)))
                else:  # only verdicts are awaited: wake as the first one comes, not at the next tick
                    self._collect(wait=CEILING)
        finally:
            verifier.close()
            ended = time.perf_counter()
            last = book.last_arrival if book.last_arrival is not None else ended
            self.phases.add("transfer", last - moving)
            self.phases.add("verify", ended - last)

    def _post_reads(self) -> bool:
        """Hand out pending chunks, at most one per source per call (striping), within each in-flight limit.

        One per call, because host transports copy inside the post itself: polling between posts
        lets each arrived chunk's verification overlap the next copy. Asynchronous transports (GPU,
        RDMA) still fill their in-flight window, as the loop comes straight back while posts succeed.
        """
        book = self.book
        self.repairs.repin_orphaned()
        posted = False
        if book.pending:
            for source in self.sources.alive():
                if len(source.inflight) >= self.options.max_inflight:
                    continue
                index = next((i for i in book.pending if book.pinned.get(i, source.endpoint) == source.endpoint), None)
                if index is None:
                    continue
                book.pending.remove(index)
                try:
                    read = self._post(source, book.chunks[index])
                except TransferError as exc:
                    book.pending.appendleft(index)
                    self.sources.fail(source, str(exc), book.pending)
                    continue
                now = time.monotonic()
                source.inflight.append(InFlight(index, read, now, now + self.options.transfer_timeout))
                posted = True
        return posted

    def _post(self, source: Source, chunk: Chunk) -> ReadHandle:
        runs = source.runs.descriptors(chunk)
        stream = self.book.stream
        local_kind, local_dev = self.local_kinds[int(stream.region_ids[stream.span(chunk)[0]])]
        remote_kind, remote_dev = source.region_kinds[source.runs.remote_region(chunk)]
        descriptors = [(r.local_address, r.remote_address, r.length) for r in runs]
        return self.engine.start_read(source.remote_agent, descriptors, local_kind, local_dev, remote_kind, remote_dev)

    def _poll_reads(self) -> bool:
        completed = False
        now = time.monotonic()
        for source in self.sources.alive():
            for flight in list(source.inflight):
                status = self.engine.state(flight.read)
                if status == "DONE":
                    self.book.backoff.landed(now - flight.posted)
                    self.engine.release(flight.read)
                    source.inflight.remove(flight)
                    self._landed(self.book.chunks[flight.chunk], source)
                    completed = True
                elif status == "ERR" or now > flight.deadline:
                    metrics.CHUNKS.labels("failed").inc()
                    timeout = self.options.transfer_timeout
                    reason = "READ failed" if status == "ERR" else f"READ missed its {timeout}s deadline"
                    self.sources.fail(source, reason, self.book.pending)
                    break
        return completed

    def _landed(self, chunk: Chunk, source: Source) -> None:
        book = self.book
        metrics.CHUNKS.labels("done").inc()
        book.delivered_by[chunk.index] = source
        source.served += chunk.nbytes
        book.done_bytes += chunk.nbytes
        book.last_arrival = time.perf_counter()
        if self.progress:
            self.progress(min(book.done_bytes, book.total), book.total)
        complete = book.arrivals.arrive(chunk)
        if complete is not None:  # None: nothing waited for this chunk any more
            self.verifier.arrived(Arrived(list(chunk.pieces), complete, source, chunk))

    def _collect(self, wait: float = 0.0) -> None:
        """Act on the verdicts that came back: in, accepted unchecked, or failed (repair, escalate)."""
        for batch in self.verifier.collect(wait):
            if batch.matched.count(True) == len(batch.matched):  # the usual batch: all in, in one step
                self.book.verified.update(batch.names)
                continue
            self._judged(batch)

    def _judged(self, batch: Verdicts) -> None:
        for name, ok in zip(*batch, strict=True):
            if ok:
                self.book.verified.add(name)
            elif ok is None and self.policy.checks(name):  # accepted before an escalation it now falls under
                self.verifier.verify([name], self.book.deliverer(name))
            elif ok is None:
                self.book.verified.add(name)
                self.book.unchecked.add(name)
            else:
                self._checksum_failed(name)

    def _checksum_failed(self, name: str) -> None:
        if self.policy.name == "sampled":
            self._escalate()
        metrics.CHECKSUM_MISMATCHES.inc()
        book = self.book
        book.refetched += 1
        implicated = book.implicated(name)
        for endpoint in implicated:
            self.sources.blame(endpoint, name)
        book.tried[name] |= implicated if len(implicated) == 1 else set()
        self.repairs.schedule(name, implicated)

    def _escalate(self) -> None:
        """A sampled tensor failed: its source cannot be trusted with the rest, so every tensor is now
        checked, those accepted unchecked included (any that fails is fetched again)."""
        log.warning("a sampled tensor failed its checksum; verifying every tensor of this pull")
        book = self.book
        self.policy.escalate(book.arrivals.partly_arrived())
        accepted, book.unchecked = sorted(book.unchecked), set()
        book.verified -= set(accepted)
        by_source: dict[str, tuple[Source | None, list[str]]] = {}
        for name in accepted:
            deliverer = book.deliverer(name)
            by_source.setdefault(deliverer.endpoint if deliverer else "", (deliverer, []))[1].append(name)
        for deliverer, names in by_source.values():
            self.verifier.verify(names, deliverer)

    def _finished(self) -> bool:
        """Everything verified, or nothing left that could make progress."""
        outstanding = self.verifier.outstanding
        if not self.book.pending and not outstanding and all(not s.inflight for s in self.sources.linked):
            return True
        return not self.sources.alive() and not outstanding

    def complete_with_fallback(self, fallback: Fallback | None) -> list[str]:
        """Load what no source delivered with `fallback`, checked against the sources' checksums."""
        book = self.book
        if book.all_verified():
            return []
        missing = [name for name in book.sizes if name not in book.verified]
        if fallback is None:
            raise NoSourceError(
                f"{len(missing)} of {len(book.sizes)} tensors could not be pulled "
                f"(sources: {self.sources.describe_failures()}) and no fallback loader was given"
            )
        log.warning("pulling %d tensor(s) failed; loading them with the fallback loader", len(missing))
        with self.phases.timing("disk"):
            fallback(self.layout.tensors, missing)
        if self.sources.linked and self.options.verification != "off":
            with self.phases.timing("verify"):
                verdicts = self.verifier.verify_now(missing, None)
            bad = [n for n, ok in verdicts.items() if not ok]
            if bad:
                raise PullError(
                    f"{len(bad)} tensor(s) loaded by the fallback loader differ from the sources' checksums, "
                    f"e.g. {bad[0]}: the disk copy is another model or revision"
                )
        return missing

    def report(self, missing: list[str], started: float) -> PullResult:
        book = self.book
        pulled = book.pulled_bytes()
        if not book.unchecked:
            checked = pulled
        elif len(book.unchecked) == len(book.verified):  # policy off
            checked = 0
        else:
            checked = pulled - sum(map(book.sizes.__getitem__, book.unchecked))
        metrics.PULL_BYTES.inc(pulled)
        metrics.PULL_VERIFIED_BYTES.labels(self.policy.name).inc(checked)
        return PullResult(
            bytes=pulled,
            seconds=time.perf_counter() - started,
            served={s.endpoint: s.served for s in self.sources.linked if s.served},
            failed_sources=self.sources.failure_reasons(),
            retried_chunks=self.sources.requeued,
            refetched_tensors=book.refetched,
            fell_back=missing,
            verification=self.policy.describe(book.sizes),
            verified_bytes=checked,
            unchecked_tensors=len(book.unchecked),
            phases=self.phases,
        )


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
    the same engine (`prepare_sources`), taken instead of linking them now. `discover`: asks the
    registry again for Ready sources, so that a target every source turned away as busy waits for
    one (`PullOptions.busy_wait`) instead of falling back at once. `phases`: where the pull adds the
    seconds of its phases, failed or not (a load's own, observed by whoever made it); without one the
    pull observes its phases itself.
    """
    if prepared is not None and prepared.engine is not engine:
        raise ValueError("the prepared sources were linked with another NIXL engine")
    started = time.perf_counter()
    options = options or PullOptions()
    own, phases = phases is None, phases if phases is not None else Phases()
    stream = functools.cache(lambda: Stream(layout))  # made on first use: a pull with no source needs none
    deaths = prepared.deaths if prepared is not None else None
    sources = Sources(layout, identity, engine, options, stream, phases, deaths)
    try:
        sources.connect(endpoints, prepared)
        sources.wait_while_busy(discover, options.busy_wait)
        if not sources.linked:
            if sources.mismatches and fallback is None:
                raise sources.mismatches[0]
            if fallback is None:
                raise NoSourceError(
                    f"no usable source for {identity.model_name} rank {identity.rank}: {sources.describe_failures()}"
                )
        result = _transfer(layout, engine, options, sources, stream(), fallback, progress, phases)
    except Exception:
        metrics.PULLS.labels("failed").inc()
        raise
    finally:
        sources.close()
        if prepared is not None:
            prepared.close()
        metrics.PULL_SECONDS.observe(time.perf_counter() - started)
        if own:
            metrics.observe_phases(phases)
    metrics.PULLS.labels("fallback" if result.fell_back else "ok").inc()
    return result


def _transfer(
    layout: TensorLayout,
    engine: NixlEngine,
    options: PullOptions,
    sources: Sources,
    stream: Stream,
    fallback: Fallback | None,
    progress: Progress | None,
    phases: Phases,
) -> PullResult:
    """Plan the chunks over the linked sources, move them, then fill what is missing from `fallback`."""
    started = time.perf_counter()
    chunk_bytes = options.chunk_bytes or default_chunk_bytes(layout)
    # Thousands of small book-keeping objects, none in a cycle: the allocations would set off the
    # cyclic collector, and a full pass walks every object of the process (in a serving engine,
    # millions of them: hundreds of milliseconds). Paused while the pull plans and moves bytes; a disk
    # fallback runs with it on.
    with gc_paused(), short_switch_interval():  # the poster waits less for the checksum thread's GIL
        with phases.timing("manifest"):
            sizes = {p.spec.name: p.spec.nbytes for p in layout.placements}
            book = Book(make_chunks(layout, chunk_bytes, stream, default_tail_bytes(layout)), stream, sizes)
            policy = Policy.of(options.verification, sizes, options.sample_fraction)
        transfer = Transfer(layout, engine, options, sources, book, policy, chunk_bytes, progress, phases)
        transfer.run()
    missing = transfer.complete_with_fallback(fallback)
    return transfer.report(missing, started)
