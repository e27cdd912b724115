"""Opted-in pods and their workers: which endpoints to follow, and the status entry each one gets.

A pod opts in with the annotation `modelexpress.io/p2p: "enabled"`. Each of its ranks serves a
WorkerService on consecutive ports from `modelexpress.io/worker-port` (default 50051), one per rank
for `modelexpress.io/ranks-per-pod` ranks (default 1; e.g. 8 for single-node TP8). The operator
follows a pod's workers only while the pod is Running, Ready, has an IP and is not being deleted.
`modelexpress.io/model-metadata` pins the ModelMetadata to record into; without it the operator
finds (or creates) the one whose spec has the identity the worker reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelexpress import API_GROUP
from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.api import SourceState, WorkerSource
from modelexpress.api.modelmetadata import NodeTopology

OPT_IN = f"{API_GROUP}/p2p"
WORKER_PORT = f"{API_GROUP}/worker-port"
RANKS_PER_POD = f"{API_GROUP}/ranks-per-pod"
MODEL_METADATA = f"{API_GROUP}/model-metadata"
_ENABLED = {"enabled", "true", "yes", "1"}
_STATES = {
    worker_pb2.WORKER_STATE_INITIALIZING: SourceState.INITIALIZING,
    worker_pb2.WORKER_STATE_READY: SourceState.READY,
    worker_pb2.WORKER_STATE_DRAINING: SourceState.DRAINING,
}


class AnnotationError(ValueError):
    """An opt-in annotation has a value the operator cannot use."""


@dataclass(frozen=True)
class WorkerTarget:
    """One WorkerService of an opted-in pod, as the operator dials it."""

    namespace: str
    pod: str
    uid: str
    node: str | None
    ip: str
    port: int
    metadata_name: str | None = None

    @property
    def key(self) -> str:
        return f"{self.uid}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def opted_in(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(OPT_IN, "").strip().lower() in _ENABLED


def _int_annotation(annotations: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = annotations.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AnnotationError(f"annotation {name}={raw!r} is not an integer; set it to {low}..{high}") from None
    if not low <= value <= high:
        raise AnnotationError(f"annotation {name}={raw!r} is out of range; set it to {low}..{high}")
    return value


def _pod_ready(status: Mapping[str, Any]) -> bool:
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def pod_targets(pod: Mapping[str, Any], default_port: int) -> list[WorkerTarget]:
    """The workers to follow in `pod` (empty unless it is opted in, Running, Ready, addressable and not deleting).

    Raises AnnotationError when the annotations are unusable.
    """
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = pod.get("status") or {}
    if not opted_in(annotations) or meta.get("deletionTimestamp") or not _pod_ready(status):
        return []
    ip = status.get("podIP")
    if not ip:
        return []
    port = _int_annotation(annotations, WORKER_PORT, default_port, 1, 65535)
    ranks = _int_annotation(annotations, RANKS_PER_POD, 1, 1, 64)
    if port + ranks - 1 > 65535:
        raise AnnotationError(f"annotations {WORKER_PORT}={port} and {RANKS_PER_POD}={ranks} run past port 65535")
    return [
        WorkerTarget(
            namespace=meta["namespace"],
            pod=meta["name"],
            uid=meta["uid"],
            node=(pod.get("spec") or {}).get("nodeName"),
            ip=ip,
            port=port + offset,
            metadata_name=annotations.get(MODEL_METADATA) or None,
        )
        for offset in range(ranks)
    ]


def source_entry(
    target: WorkerTarget,
    status: worker_pb2.WorkerStatus,
    state: SourceState | None = None,
    place: NodeTopology | None = None,
) -> WorkerSource:
    """The `status.sources` entry of a worker from its latest status message (`state` overrides, e.g.
    Stale; `place`: its node's zone and domain)."""
    return WorkerSource(
        pod=target.pod,
        pod_uid=target.uid,
        instance=status.instance or target.pod,
        node=target.node or status.node_name or None,
        rank=status.identity.rank,
        endpoint=target.endpoint,  # the address the operator reached it at, not what it believes it is
        agent_name=status.agent_name or None,
        gpu_architecture=status.identity.gpu_architecture or None,
        state=state or _STATES.get(status.state, SourceState.INITIALIZING),
        tensor_count=status.tensor_count,
        bytes=status.total_bytes,
        zone=place.zone if place else None,
        domain=place.domain if place else None,
        active_transfers=status.active_transfers,
        weights_version=status.identity.weights_version or None,
        updated_at=datetime.now(UTC).replace(microsecond=0),
    )


def same_entry(a: WorkerSource, b: WorkerSource) -> bool:
    """Equal apart from the timestamp: an unchanged heartbeat needs no write. (The fields compared as they
    are held, not dumped: a burst of 10,000 ranks asks this 10,000 times.)"""
    return {**vars(a), "updated_at": None} == {**vars(b), "updated_at": None}
