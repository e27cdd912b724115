"""The trainer's side: its tensors, where they already are in memory, offered as one version after another.

Nothing is copied: the tensors are registered with NIXL where they lie (`adopt_tensors`), and each
`publish` computes their digests and offers them under the new version. The trainer must not change
them until every replica has them (`send_weights` returns then). When the tensors moved (an optimizer
that reallocated them), the memory is registered again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import torch

from modelexpress.config.worker import WorkerSettings, load_worker_settings
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import TensorLayout, adopt_tensors
from modelexpress.p2p.records import Registrar
from modelexpress.p2p.source import SourceWorker
from modelexpress.refit.versions import version_identity

log = logging.getLogger(__name__)


def _addresses(layout: TensorLayout) -> list[tuple[object, ...]]:
    """Where the memory and each tensor in it are: equal for two layouts of the same tensors, unmoved."""
    regions: list[tuple[object, ...]] = [(r.kind, r.device_id, r.address, r.length) for r in layout.regions]
    return regions + [(p.spec.name, p.region_id, p.offset, p.spec.nbytes) for p in layout.placements]


class WeightPublisher:
    """Offers one model's tensors, version after version, from a WorkerService of its own."""

    def __init__(
        self, model_name: str, settings: WorkerSettings | None = None, registry: Registrar | None = None
    ) -> None:
        self.model_name = model_name
        self.settings = settings or load_worker_settings()
        self.registry = registry
        self.source: SourceWorker | None = None
        self.version: str | None = None

    @property
    def endpoint(self) -> str | None:
        """Where replicas reach this publisher's WorkerService (None before the first publish)."""
        return self.source.endpoint if self.source is not None else None

    def publish(self, version: str, tensors: Iterable[tuple[str, torch.Tensor]]) -> Manifest:
        """Offer `tensors`, as they are now, as `version`; returns the manifest replicas will check against."""
        started = time.perf_counter()
        identity = version_identity(self.model_name, version)
        layout = adopt_tensors([(name, tensor.detach()) for name, tensor in tensors])
        if self.source is not None and _addresses(self.source.layout) != _addresses(layout):
            log.info("the tensors moved since version %s: registering their memory again", self.version)
            self.source.stop()
            self.source = None
        if self.source is None:
            self.source = SourceWorker(identity, layout, self.settings)
            self.source.start(self.registry)
        else:
            self.source.republish(identity)
        self.version = version
        manifest = self.source.manifest
        assert manifest is not None  # set by start/republish
        log.info("publishing version %s of %s: %d tensors, %.1f MB, digests in %.2fs (%s)", version,
                 self.model_name, manifest.tensor_count, manifest.total_bytes / 1e6,
                 time.perf_counter() - started, self.source.endpoint)  # fmt: skip
        return manifest

    def withdraw(self, reason: str) -> None:
        """Stop offering the current version (the tensors are about to change)."""
        if self.source is not None:
            self.source.hold(reason)

    def close(self) -> None:
        if self.source is not None:
            self.source.stop()
            self.source = None
