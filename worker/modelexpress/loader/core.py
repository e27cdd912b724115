"""`WeightLoader`: fill a constructed module's weights from a peer or from disk, then serve them.

The contract an engine adapter relies on (the capture rule of `modelexpress.loader.capture`):

1. the module is constructed (its tensors allocated, values irrelevant) in the layout loading
   fills: names, shapes and dtypes as the checkpoint loader leaves them, *before* post-processing;
2. `receive(module)` asks the registry for Ready sources of exactly this identity and rank, READs
   every tensor into a pool of its own over NIXL, verifies every checksum and only then points the
   module's tensors at the pool; it returns None, the module untouched, when no source could deliver;
3. otherwise the engine loads from disk and calls `adopt(module)`, which moves the loaded tensors into
   one pooled allocation (one NIXL registration);
4. the engine post-processes its module as it always does; `seal()` then checks that the pool still
   holds the loaded state (post-processing may replace tensors, never rewrite them in place);
5. `publish()` serves the pool (WorkerService + NIXL) and records the rank as Ready, so the next
   replica of the same layout loads from it; `close()` withdraws it.

A replica whose loaded state cannot be captured, or whose post-processing rewrote it, loads from
disk and is never published: a source never serves state it cannot fully serve. Engines without
post-processing use `load(module, load_from_disk)`, which runs the steps in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from modelexpress import metrics
from modelexpress.config.worker import WorkerSettings, load_worker_settings
from modelexpress.loader.capture import capture_gate, changed_in_place, state_checksums
from modelexpress.loader.rehome import attach, module_tensors, plan_pool, rehome
from modelexpress.p2p.checksum import choose_algorithm
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PreparedSources, PullError, PullOptions, prepare_sources, pull
from modelexpress.p2p.source import SourceWorker
from modelexpress.phases import Phases
from modelexpress.registry.base import RegistryUnavailableError, SourceRegistry, placement
from modelexpress.units import rate, size

log = logging.getLogger(__name__)
DiskLoader = Callable[[nn.Module], None]


@dataclass
class LoadReport:
    """How the weights were loaded, for logs and tests."""

    mode: Literal["p2p", "disk"]
    reason: str
    bytes: int
    seconds: float
    sources: list[str] = field(default_factory=list)
    endpoint: str | None = None
    """Where this worker now serves its weights (None when not serving)."""
    phases: Phases = field(default_factory=Phases)
    """Where the load's time went (the same object the loader and its engine adapter add to)."""

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def summary(self, model: str, rank: int) -> str:
        origin = "peers " + ", ".join(self.sources) if self.mode == "p2p" else "disk"
        line = f"{model} rank {rank}: {size(self.bytes)} from {origin} in {self.seconds:.2f}s ({self.reason})"
        return f"{line}; phases: {self.phases.summary()}" if self.phases.seconds else line

    def record(self) -> None:
        """Count the load and observe its phases (once, when the load is over)."""
        metrics.WEIGHT_LOADS.labels(self.mode).inc()
        metrics.observe_phases(self.phases)


class WeightLoader:
    """Loads one rank's weights and then serves them; one per worker rank."""

    def __init__(
        self,
        identity: WorkerIdentity,
        settings: WorkerSettings | None = None,
        registry: SourceRegistry | None = None,
        serve: bool = True,
    ) -> None:
        self.identity = identity
        self.settings = settings or load_worker_settings()
        self.registry = registry
        self.serve = serve
        self.gate: str | None = None
        """Why this replica neither pulls nor serves (None while it may)."""
        self.phases = Phases()
        """This load's phases: the loader times linking and pulling, its engine adapter the rest."""
        self.layout: TensorLayout | None = None
        self.engine: NixlEngine | None = None
        self.source: SourceWorker | None = None
        self._checksums: dict[str, int] | None = None
        self._endpoints: list[str] | None = None
        self._pods: dict[str, str] | None = None
        self._ahead: Future[PreparedSources | None] | None = None
        self._registered: TensorLayout | None = None
        self._lookup = threading.Lock()

    def prepare(self, pull: bool = True) -> None:
        """Start, in the background, what needs no built model: the NIXL agent and, with `pull`, the
        registry lookup and each Ready source's link (status, manifest, agent metadata, connection).
        An engine calls this before it builds its model, so the two overlap; `receive` and `publish`
        wait for it."""
        if self._ahead is not None or self.engine is not None:
            return
        future: Future[PreparedSources | None] = Future()

        def work() -> None:
            try:
                future.set_result(self._prepare(pull))
            except BaseException as exc:  # handed to whoever waits; never lost in the thread
                future.set_exception(exc)

        self._ahead = future
        threading.Thread(target=work, name="mx-prepare", daemon=True).start()

    def _prepare(self, pull: bool) -> PreparedSources | None:
        self.engine = NixlEngine(progress_thread=self.settings.nixl_progress_thread)
        endpoints = self.sources() if pull else []
        if not endpoints:
            return None
        with self.phases.timing("link"):
            return prepare_sources(
                endpoints, self.identity, self.engine, self.settings.connect_timeout_secs, self._pods or {}
            )

    def _wait_ahead(self) -> PreparedSources | None:
        """What `prepare` linked (None if it did not run or failed: then it is done now, in line)."""
        future, self._ahead = self._ahead, None
        if future is None:
            return None
        try:
            return future.result()
        except Exception as exc:
            log.warning("preparing the pull in the background failed (%s); doing it now", exc)
            return None

    def _engine(self) -> NixlEngine:
        if self.engine is None:
            self.engine = NixlEngine(progress_thread=self.settings.nixl_progress_thread)
        return self.engine

    def _register(self, layout: TensorLayout) -> None:
        engine = self._engine()
        if self._registered is not None and self._registered is not layout:
            engine.deregister_all()
        if self._registered is not layout:
            engine.register(layout)
            self._registered = layout

    def check(self, module: nn.Module) -> str | None:
        """Apply the capture rule to the freshly built module; the reason it cannot take part, if any."""
        if self.gate is None:
            self.gate = capture_gate(module)
        return self.gate

    def sources(self) -> list[str]:
        """Endpoints of Ready sources of this identity and rank (empty when gated or none); one lookup,
        whichever thread asks first."""
        with self._lookup:
            return self._sources()

    def _sources(self) -> list[str]:
        if self._endpoints is None:
            self._endpoints, self._pods = [], {}
            if self.registry is not None and not self.gate:
                try:
                    records = self.registry.find_ready(self.identity, placement(self.settings))
                except RegistryUnavailableError as exc:
                    log.warning("no peer lookup (%s); loading from disk", exc)
                    records = []
                self._endpoints = [r.endpoint for r in records]
                self._pods = {r.endpoint: r.pod_uid for r in records if r.pod_uid}
        return list(self._endpoints)

    def _again(self) -> list[str]:
        """A fresh lookup: sources that became Ready since the last one (e.g. targets that finished)."""
        with self._lookup:
            self._endpoints = None
            return self._sources()

    def load(
        self, module: nn.Module, load_from_disk: DiskLoader, device: torch.device | str | None = None
    ) -> LoadReport:
        """Peers first, else `load_from_disk(module)`; then serve (for engines with no post-processing)."""
        self.check(module)
        report = self.receive(module, device) if self.sources() else None
        if report is None:
            started = time.perf_counter()
            with torch.no_grad(), self.phases.timing("disk"):
                load_from_disk(module)
            report = self.adopt(module, device, started)
        self.publish(report)
        return report

    def receive(self, module: nn.Module, device: torch.device | str | None = None) -> LoadReport | None:
        """READ every tensor of the module from the sources into a pool, then hand the pool to the module.

        None when no source could deliver everything; the module is then exactly as it was built.
        """
        started = time.perf_counter()
        prepared = self._wait_ahead()
        if self.check(module) or not self.sources():
            if prepared is not None:
                prepared.close()
            return None
        layout = plan_pool(module, device)
        self._register(layout)
        options = PullOptions(
            chunk_bytes=self.settings.chunk_bytes,
            max_inflight=self.settings.max_inflight,
            transfer_timeout=self.settings.transfer_timeout_secs,
            connect_timeout=self.settings.connect_timeout_secs,
            expected_pods=self._pods or {},
            verification=self.settings.verification,
            sample_fraction=self.settings.verify_sample,
            busy_wait=self.settings.busy_wait_secs,
            max_sources=self.settings.max_sources,
        )
        try:
            result = pull(
                layout,
                self.identity,
                self.sources(),
                self._engine(),
                options,
                prepared=prepared,
                discover=self._again,
                phases=self.phases,
            )
        except PullError as exc:
            # Each source's failure was logged where it happened; one line says what follows.
            log.warning("%s rank %d: none of %d source(s) delivered the weights; loading from disk",
                        self.identity.model_name, self.identity.rank, len(self.sources()))  # fmt: skip
            log.debug("pull failed: %s", exc)
            self._engine().deregister_all()  # the agent stays: the disk-loaded replica serves with it
            self._registered = None
            return None
        attach(module, layout, copy=False)
        self._capture(layout)
        return LoadReport(
            "p2p",
            f"{len(result.sources)} Ready source(s); READs and checks {result.seconds:.2f}s, {rate(result.gbps * 1e9)}, "
            f"verification {result.verification}",
            result.bytes,
            time.perf_counter() - started,
            sources=list(result.sources),
            phases=self.phases,
        )

    def adopt(
        self,
        module: nn.Module,
        device: torch.device | str | None = None,
        started: float | None = None,
        reason: str | None = None,
    ) -> LoadReport:
        """Take over a module the caller loaded from disk: its tensors move into the pool (values kept).
        `reason` says why it came from disk when the caller knows better than "no Ready source"."""
        self.check(module)
        seconds = time.perf_counter() - started if started is not None else 0.0
        if self.gate:
            nbytes = sum(t.numel() * t.element_size() for t, _ in module_tensors(module).values())
            return LoadReport("disk", self.gate, nbytes, seconds, phases=self.phases)
        if self.layout is None:
            self._capture(rehome(module, device, copy=True))
        assert self.layout is not None
        if reason is None:
            reason = "every source failed" if self._endpoints else "no Ready source of this layout"
        return LoadReport("disk", reason, self.layout.total_bytes, seconds, phases=self.phases)

    def _capture(self, layout: TensorLayout) -> None:
        self.layout = layout
        self._checksums = state_checksums(layout, self._algorithm(layout))

    def _algorithm(self, layout: TensorLayout) -> str:
        return choose_algorithm(layout, self.settings.checksum_algorithm)

    def seal(self) -> bool:
        """After the engine's post-processing: does the pool still hold the loaded state? If not, the
        replica keeps running as loaded but will not be published."""
        if self.gate or self.layout is None or self._checksums is None:
            return False
        changed = changed_in_place(self.layout, self._checksums, self._algorithm(self.layout))
        if changed:
            self.gate = (
                f"post-processing rewrote {len(changed)} loaded tensor(s) in place (e.g. {changed[0]}), so this "
                "replica cannot serve the loaded state"
            )
        return not changed

    def publish(self, report: LoadReport | None = None) -> str | None:
        """Serve the pool and record it as Ready (unless the replica is gated or serving is off); the
        report, when given, is logged and recorded in the metrics."""
        if report is not None:
            log.info("%s", report.summary(self.identity.model_name, self.identity.rank))
            report.record()
        if not self.serve or self.layout is None or self.gate:
            if self.gate:
                log.info("%s rank %d is not served to peers: %s", self.identity.model_name, self.identity.rank,
                         self.gate)  # fmt: skip
            self._release()
            return None
        self._wait_ahead()
        self._register(self.layout)
        self.source = SourceWorker(self.identity, self.layout, self.settings, self._engine(), self._checksums)
        try:
            self.source.start(self.registry)
        except RegistryUnavailableError as exc:
            log.warning("serving at %s but not published: %s", self.source.endpoint, exc)
        if report is not None:
            report.endpoint = self.source.endpoint
        log.info("%s rank %d: serving at %s", self.identity.model_name, self.identity.rank, self.source.endpoint)
        return self.source.endpoint

    def _release(self) -> None:
        prepared = self._wait_ahead()
        if prepared is not None:
            prepared.close()
        if self.engine is not None:
            self.engine.deregister_all()
            self.engine = None
        self._registered = None

    def close(self) -> None:
        """Stop serving and leave the registry; the module keeps its weights."""
        if self.source is not None:
            self.source.stop()
            self.source = None
            self.engine = None
        self._release()
