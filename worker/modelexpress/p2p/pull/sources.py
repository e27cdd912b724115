"""The sources of one pull, and the one owner of their links: linking (or taking a link made ahead),
matching each source's tensors to ours, the reserve beyond `max_sources`, abandoning a source that
failed (its READs go back to the queue and a reserve source is linked in its place), the deaths the
status streams report, and closing every link at the end.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy

from modelexpress import metrics
from modelexpress.bulk import gc_paused
from modelexpress.p2p.client import SourceBusyError, WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.nixl_engine import NixlEngine, ReadHandle
from modelexpress.p2p.notices import pulled
from modelexpress.p2p.plan import SourceMap, TensorMismatchError, match
from modelexpress.p2p.pull.links import LINK_ERRORS, Deaths, PreparedSources, SourceLink, link_source
from modelexpress.p2p.pull.options import Discover, PullOptions
from modelexpress.p2p.stream import Stream
from modelexpress.phases import Phases

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """A READ posted to a source: the chunk it carries, its handle, when it was posted, its deadline."""

    chunk: int
    read: ReadHandle
    posted: float
    deadline: float


@dataclass
class Source:
    """A linked source whose tensors match ours: where each of our bytes lies in its memory."""

    endpoint: str
    client: WorkerClient
    manifest: Manifest
    remote_agent: str
    runs: SourceMap
    region_kinds: dict[int, tuple[str, int]]
    algorithm: str
    inflight: list[InFlight] = field(default_factory=list)
    failure: str | None = None
    served: int = 0

    @cached_property
    def expected(self) -> numpy.ndarray:
        """The published checksums in our stream order (made by the verify thread on first use)."""
        expected: numpy.ndarray = self.manifest.columns.checksums[self.runs.remote_rows]
        return expected


class Sources:
    """Every source offered to one pull, linked best first up to `max_sources`, the rest in reserve."""

    def __init__(
        self,
        layout: TensorLayout,
        identity: WorkerIdentity,
        engine: NixlEngine,
        options: PullOptions,
        stream: Callable[[], Stream],
        phases: Phases,
        deaths: Deaths | None = None,
    ) -> None:
        self.layout, self.identity, self.engine, self.options = layout, identity, engine, options
        self.stream, self.phases = stream, phases
        self.deaths = deaths or Deaths()
        self.linked: list[Source] = []
        self.failed: dict[str, str] = {}
        self.busy: dict[str, str] = {}  # endpoint -> why it turned this target away (it serves enough others)
        self.reserve: list[str] = []  # ranked endpoints not linked yet: max_sources were linked before them
        self.prepared: PreparedSources | None = None
        self.corrupt: dict[str, list[str]] = {}  # endpoint -> tensors it delivered that failed their checksum
        self.mismatches: list[TensorMismatchError] = []
        self.requeued = 0  # READs in flight at sources that failed, handed to the others

    def alive(self) -> list[Source]:
        return [s for s in self.linked if s.failure is None]

    def connect(self, endpoints: list[str], prepared: PreparedSources | None = None) -> None:
        """Link each source (or take the link made ahead of time) and match its tensors to ours, best
        first, until `max_sources` are linked; the rest wait in reserve for one that fails."""
        if prepared is not None:
            self.prepared = prepared
        with gc_paused():  # a manifest of thousands of entries, matched: see transfer._transfer
            for n, endpoint in enumerate(endpoints):
                if self.options.max_sources and len(self.alive()) >= self.options.max_sources:
                    self.reserve.extend(e for e in endpoints[n:] if e not in self.reserve)
                    break
                self._connect_one(endpoint, prepared)

    def _connect_one(self, endpoint: str, prepared: PreparedSources | None) -> None:
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
            return
        except (*LINK_ERRORS, TensorMismatchError) as exc:
            if isinstance(exc, TensorMismatchError):
                self.mismatches.append(exc)
            self.failed[endpoint] = str(exc)
            metrics.SOURCE_FAILURES.labels("connect").inc()
            log.warning("source %s not used: %s", endpoint, exc)
            return
        self.linked.append(source)

    def _matched(self, link: SourceLink) -> Source:
        """The linked source with its tensors matched to ours; its link is dropped if they differ."""
        try:
            rows = match(self.layout, link.manifest)
        except TensorMismatchError:
            self.engine.remove_remote(link.remote_agent)
            link.client.close()
            raise
        return Source(
            link.endpoint,
            link.client,
            link.manifest,
            link.remote_agent,
            SourceMap(self.layout, link.manifest, rows, self.stream()),
            {r.id: (r.kind, r.device_id) for r in link.manifest.regions},
            link.manifest.checksum_algorithm,
        )

    def wait_while_busy(self, discover: Discover | None, patience: float) -> None:
        """While no source is usable and some turned this target away as busy, wait (backing off, with
        jitter so a burst does not come back at once) and try the sources `discover` finds now: targets
        that finished meanwhile are sources too. Gives up after `patience` seconds."""
        deadline = time.monotonic() + patience
        pause = 0.2
        while not self.linked and self.busy and discover is not None and time.monotonic() < deadline:
            log.info("all %d source(s) of %s rank %d are busy; waiting for one (up to %.0fs more)",
                     len(self.busy), self.identity.model_name, self.identity.rank, deadline - time.monotonic())  # fmt: skip
            with self.phases.timing("link"):
                time.sleep(min(pause * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 5.0)
            self.busy.clear()
            self.connect(discover())

    def fail(self, source: Source, reason: str, requeue: collections.deque[int]) -> None:
        """Abandon `source`: its READs in flight go back to the front of `requeue`, and a reserve source
        is linked in its place while fewer than `max_sources` are alive."""
        if source.failure is not None:
            return
        source.failure = reason
        self.failed[source.endpoint] = reason
        metrics.SOURCE_FAILURES.labels("transfer").inc()
        log.warning("abandoning source %s: %s", source.endpoint, reason)
        for flight in source.inflight:
            self.engine.release(flight.read)
            requeue.appendleft(flight.chunk)
        self.requeued += len(source.inflight)
        source.inflight.clear()
        while self.reserve and len(self.alive()) < (self.options.max_sources or len(self.linked) + 1):
            endpoint = self.reserve.pop(0)
            log.info("linking reserve source %s in place of %s", endpoint, source.endpoint)
            self.connect([endpoint], self.prepared)

    def reap_dead(self, requeue: collections.deque[int]) -> None:
        """Abandon the sources whose status stream reported them gone."""
        dead = self.deaths.snapshot()
        for source in self.alive():
            if source.endpoint in dead:
                self.fail(source, dead[source.endpoint], requeue)

    def blame(self, endpoint: str, name: str) -> None:
        """`endpoint` delivered bytes of `name` that failed their checksum."""
        self.corrupt.setdefault(endpoint, []).append(name)

    def failure_reasons(self) -> dict[str, str]:
        """Why each source did not deliver everything: its failure, and the tensors it served that failed
        verification."""
        reasons = {**self.busy, **self.failed}
        for endpoint, names in self.corrupt.items():
            corrupt = f"{len(names)} tensor(s) failed checksum verification (e.g. {names[0]})"
            reasons[endpoint] = f"{reasons[endpoint]}; {corrupt}" if endpoint in reasons else corrupt
        return reasons

    def describe_failures(self) -> str:
        return "; ".join(f"{ep}: {why}" for ep, why in self.failure_reasons().items()) or "none offered"

    def close(self) -> None:
        """Release what is in flight; tell healthy sources what they served, drop the failed ones."""
        for source in self.linked:
            for flight in source.inflight:
                self.engine.release(flight.read)
            if source.failure is not None:
                self.engine.remove_remote(source.remote_agent)  # healthy peers keep their connection
            elif source.served:
                self.engine.notify(source.remote_agent, pulled(source.served))
            source.client.close()
