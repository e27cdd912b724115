"""The source registry interface and the record it keeps per worker rank."""

from __future__ import annotations

import abc

from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry.ranking import Placement


class RegistryUnavailableError(RuntimeError):
    """The registry's backend cannot be reached or refused a request; the message says what to check."""


class SourceRegistry(abc.ABC):
    """Record and find sources. Implementations must be safe for concurrent writers."""

    @abc.abstractmethod
    def publish(self, record: SourceRecord) -> None:
        """Insert or replace the record of `record.worker_id`."""

    @abc.abstractmethod
    def set_state(self, worker_id: str, state: str) -> None:
        """Change a worker's state and refresh its timestamp."""

    @abc.abstractmethod
    def remove(self, worker_id: str) -> None:
        """Forget a worker (it stopped)."""

    @abc.abstractmethod
    def find_ready(self, identity: WorkerIdentity, near: Placement | None = None) -> list[SourceRecord]:
        """Ready, fresh sources with exactly this identity and rank, best first seen from `near`
        (`ranking.rank_sources`: nearest tier, then least loaded)."""

    @abc.abstractmethod
    def list_sources(self) -> list[SourceRecord]:
        """Every recorded source, whatever its state or identity (for inspection)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def placement(settings: WorkerSettings) -> Placement:
    """Where this worker runs, from its settings (`MX_NODE_NAME`, `MX_DOMAIN`, `MX_ZONE`)."""
    return Placement(settings.node_name, settings.domain, settings.zone)


def open_registry(settings: WorkerSettings) -> SourceRegistry:
    """The registry named by `MX_METADATA_BACKEND`."""
    if settings.metadata_backend == "embedded":
        from modelexpress.registry.embedded import EmbeddedRegistry

        return EmbeddedRegistry(settings.registry_path, ttl_seconds=settings.status_ttl_secs)
    if settings.metadata_backend == "kubernetes":
        from modelexpress.kubeclient import default_namespace
        from modelexpress.registry.kubernetes import KubernetesRegistry

        return KubernetesRegistry(default_namespace(settings.pod_namespace))
    from modelexpress.registry.redis import RedisRegistry

    return RedisRegistry(settings.redis_url, ttl_seconds=settings.status_ttl_secs)
