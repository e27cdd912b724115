"""The record a registry keeps per source worker rank, and the part of a registry a source uses."""

from __future__ import annotations

import time
from typing import Protocol

from pydantic import BaseModel, Field

from modelexpress.p2p.identity import WorkerIdentity


class SourceRecord(BaseModel):
    """One worker rank that can serve (or is loading) a model identity."""

    worker_id: str
    identity: WorkerIdentity
    endpoint: str
    agent_name: str
    state: str = "Initializing"
    tensor_count: int = 0
    total_bytes: int = 0
    node: str | None = None
    zone: str | None = None
    """Zone of the node (`topology.kubernetes.io/zone`), where known."""
    domain: str | None = None
    """Rack or NVLink domain of the node (a configurable node label), where known."""
    pod_uid: str | None = None
    active_transfers: int = 0
    updated_at: float = Field(default_factory=time.time)


class Registrar(Protocol):
    """What a source needs of a registry: record itself, and leave."""

    def publish(self, record: SourceRecord) -> None: ...

    def remove(self, worker_id: str) -> None: ...
