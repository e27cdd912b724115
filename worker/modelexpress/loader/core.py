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

    def _endpoints(self) -> tuple[list[str], dict[str, str]]:
        if self.registry is None or self.gate:
            return [], {}
        try:
            records = self.registry.find_ready(self.identity, node=self.settings.node_name)
        except RegistryUnavailableError as exc:
            log.warning("no peer lookup (%s); loading from disk", exc)
            return [], {}
        return [r.endpoint for r in records], {r.endpoint: r.pod_uid for r in records if r.pod_uid}

    def load(
        self, module: nn.Module, load_from_disk: DiskLoader, device: torch.device | str | None = None
    ) -> LoadReport:
        started = time.perf_counter()
        endpoints, pods = self._endpoints()
        report: LoadReport | None = None
        if endpoints:
            report = self._receive(module, endpoints, pods, device, started)
        if report is None:
            reason = self.gate or ("every source failed" if endpoints else "no Ready source of this layout")
            with torch.no_grad():
                load_from_disk(module)
            if self.layout is None or not still_pooled(module, self.layout):
                self._release()
                self.layout = rehome(module, device, copy=True)
            report = LoadReport("disk", reason, self.layout.total_bytes, time.perf_counter() - started)
        if self.serve and not self.gate:
            report.endpoint = self._publish()
        log.info(
            "%s rank %d: loaded %.2f GiB from %s in %.2fs (%s)",
            self.identity.model_name,
            self.identity.rank,
            report.bytes / 2**30,
            "peers " + ", ".join(report.sources) if report.mode == "p2p" else "disk",
            report.seconds,
            report.reason,
        )
        return report

    def _receive(
        self,
        module: nn.Module,
        endpoints: list[str],
        pods: dict[str, str],
        device: torch.device | str | None,
        started: float,
    ) -> LoadReport | None:
        self.layout = rehome(module, device, copy=False)
        self.engine = NixlEngine()
        self.engine.register(self.layout)
        options = PullOptions(
            chunk_bytes=self.settings.chunk_bytes,
            max_inflight=self.settings.max_inflight,
            transfer_timeout=self.settings.transfer_timeout_secs,
            connect_timeout=self.settings.connect_timeout_secs,
            expected_pods=pods,
        )
        try:
            result = pull(self.layout, self.identity, endpoints, self.engine, options)
        except PullError as exc:
            # Never a half-filled model: the disk loader rewrites every tensor.
            log.warning("peer transfer failed (%s); loading from disk", exc)
            return None
        return LoadReport(
            "p2p",
            f"{len(result.sources)} Ready source(s)",
            result.bytes,
            time.perf_counter() - started,
            sources=list(result.sources),
        )

    def _publish(self) -> str:
        assert self.layout is not None
        if self.engine is None:
            self.engine = NixlEngine()
            self.engine.register(self.layout)
        self.source = SourceWorker(self.identity, self.layout, self.settings, self.engine)
        try:
            self.source.start(self.registry)
        except RegistryUnavailableError as exc:
            log.warning("serving at %s but not published: %s", self.source.endpoint, exc)
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
