"""`WeightLoader`: fill a constructed module's weights from a peer or from disk, then serve them.

The contract an engine adapter relies on:

1. the module is constructed (its tensors allocated, values irrelevant) with the *final* layout a
   loaded model has: names, shapes and dtypes after any post-processing;
2. `load(module, load_from_disk)` asks the registry for Ready sources of exactly this identity and
   rank (unless a feature gate says no), moves the module's tensors into one pooled allocation,
   and READs every byte from the sources over NIXL, checksums verified; with no source, or when every
   source fails, it calls `load_from_disk(module)` instead (which writes into the module's tensors);
3. either way the module then serves its weights (WorkerService + NIXL) and is published as Ready,
   so the next instance of the same layout loads from it; `close()` withdraws it.

Engines that post-process weights after loading (vLLM) use the steps one by one: `sources()`, then
`receive()` on a module already in its post-processed layout, or their own disk load followed by
`adopt()`; then `publish()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from modelexpress.config.worker import WorkerSettings
from modelexpress.loader.features import feature_gate
from modelexpress.loader.rehome import rehome, still_pooled
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PullError, PullOptions, pull
from modelexpress.p2p.source import SourceWorker
from modelexpress.registry.base import RegistryUnavailableError, SourceRegistry

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

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


class WeightLoader:
    """Loads one rank's weights and then serves them; one per worker rank."""

    def __init__(
        self,
        identity: WorkerIdentity,
        settings: WorkerSettings | None = None,
        registry: SourceRegistry | None = None,
        model_config: Mapping[str, Any] | None = None,
        serve: bool = True,
    ) -> None:
        self.identity = identity
        self.settings = settings or WorkerSettings()
        self.registry = registry
        self.gate = feature_gate(model_config)
        self.serve = serve
        self.layout: TensorLayout | None = None
        self.engine: NixlEngine | None = None
        self.source: SourceWorker | None = None
        self._endpoints: list[str] | None = None
        self._pods: dict[str, str] | None = None

    def sources(self) -> list[str]:
        """Endpoints of Ready sources of this identity and rank (empty when gated or none)."""
        if self._endpoints is None:
            self._endpoints, self._pods = [], {}
            if self.registry is not None and not self.gate:
                try:
                    records = self.registry.find_ready(self.identity, node=self.settings.node_name)
                except RegistryUnavailableError as exc:
                    log.warning("no peer lookup (%s); loading from disk", exc)
                    records = []
                self._endpoints = [r.endpoint for r in records]
                self._pods = {r.endpoint: r.pod_uid for r in records if r.pod_uid}
        return list(self._endpoints)

    def load(
        self, module: nn.Module, load_from_disk: DiskLoader, device: torch.device | str | None = None
    ) -> LoadReport:
        """Peers first, else `load_from_disk(module)`; then serve (for engines with no post-processing)."""
        report = self.receive(module, device) if self.sources() else None
        if report is None:
            started = time.perf_counter()
            with torch.no_grad():
                load_from_disk(module)
            report = self.adopt(module, device, started)
        self.publish(report)
        return report

    def receive(self, module: nn.Module, device: torch.device | str | None = None) -> LoadReport | None:
        """READ every tensor of the module from the sources; None (nothing usable) when all of them fail,
        in which case the module's values are undefined and it must be loaded from disk."""
        started = time.perf_counter()
        endpoints = self.sources()
        if not endpoints:
            return None
        self._release()
        self.layout = rehome(module, device, copy=False)
        self.engine = NixlEngine(progress_thread=self.settings.nixl_progress_thread)
        self.engine.register(self.layout)
        options = PullOptions(
            chunk_bytes=self.settings.chunk_bytes,
            max_inflight=self.settings.max_inflight,
            transfer_timeout=self.settings.transfer_timeout_secs,
            connect_timeout=self.settings.connect_timeout_secs,
            expected_pods=self._pods or {},
        )
        try:
            result = pull(self.layout, self.identity, endpoints, self.engine, options)
        except PullError as exc:
            log.warning("peer transfer failed (%s); the weights must come from disk", exc)
            self._release()
            self.layout = None
            return None
        return LoadReport(
            "p2p",
            f"{len(result.sources)} Ready source(s)",
            result.bytes,
            time.perf_counter() - started,
            sources=list(result.sources),
        )

    def adopt(
        self, module: nn.Module, device: torch.device | str | None = None, started: float | None = None
    ) -> LoadReport:
        """Take over a module the caller loaded from disk: its tensors move into the pool (values kept)."""
        if self.layout is None or not still_pooled(module, self.layout):
            self._release()
            self.layout = rehome(module, device, copy=True)
        if self.gate:
            reason = self.gate
        elif self._endpoints:
            reason = "every source failed"
        else:
            reason = "no Ready source of this layout"
        seconds = time.perf_counter() - started if started is not None else 0.0
        return LoadReport("disk", reason, self.layout.total_bytes, seconds)

    def publish(self, report: LoadReport | None = None) -> str | None:
        """Serve the module's weights and record them as Ready (not for gated models)."""
        if not self.serve or self.gate or self.layout is None:
            return None
        if self.engine is None:
            self.engine = NixlEngine(progress_thread=self.settings.nixl_progress_thread)
            self.engine.register(self.layout)
        self.source = SourceWorker(self.identity, self.layout, self.settings, self.engine)
        try:
            self.source.start(self.registry)
        except RegistryUnavailableError as exc:
            log.warning("serving at %s but not published: %s", self.source.endpoint, exc)
        if report is not None:
            report.endpoint = self.source.endpoint
            log.info(
                "%s rank %d: %.2f GiB from %s in %.2fs (%s); serving at %s",
                self.identity.model_name,
                self.identity.rank,
                report.bytes / 2**30,
                "peers " + ", ".join(report.sources) if report.mode == "p2p" else "disk",
                report.seconds,
                report.reason,
                self.source.endpoint,
            )
        return self.source.endpoint

    def _release(self) -> None:
        if self.engine is not None:
            self.engine.deregister_all()
            self.engine = None

    def close(self) -> None:
        """Stop serving and leave the registry; the module keeps its weights."""
        if self.source is not None:
            self.source.stop()
            self.source = None
            self.engine = None
        self._release()
