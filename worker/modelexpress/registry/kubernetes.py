"""The Kubernetes source registry: workers find peers in ModelSourceSlices, which only the operator writes.

Workers never write: the operator learns a worker's state from its WorkerService status stream, so
`publish`, `set_state` and `remove` are no-ops here and the worker's RBAC is get/list/watch on
`modelsourceslices` and get/list on `modelmetadatas`. A lookup reads the slices of the worker's
identity and rank (each slice holds one rank's entries): one list by label selector per lookup
(`watch=False`, what a pull does), or from a cache kept by a list-then-watch loop over the namespace's
slices (`watch=True`, for long-running readers: a change of one worker brings one slice). Either way
the cost follows the slices read: a TP8 worker of a 10,000-rank fleet reads its own rank's 1,250
entries, not the model's 10,000.

A source is handed out only when it is Ready, has the target's rank, GPU architecture and weight
version (none, or exactly the RL step asked for), and sits in a slice of a ModelMetadata whose spec
has the target's identity (the slice's identity label). Same-node sources come first, then the least
loaded (fewest targets pulling), ties broken at random so that targets spread out.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, TypeVar, cast

from kubernetes import client, watch
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api.modelmetadata import (
    IDENTITY_LABEL,
    TOPOLOGY_CONFIGMAP,
    ModelMetadata,
    ModelMetadataSpec,
    NodeTopology,
    SourceState,
    WorkerSource,
)
from modelexpress.api.modelsourceslice import ModelSourceSlice, rank_selector
from modelexpress.kubeclient import kube_api_client
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry.base import SourceRegistry
from modelexpress.registry.ranking import Placement, rank_sources

log = logging.getLogger(__name__)
Parsed = TypeVar("Parsed", ModelMetadata, ModelSourceSlice)
PLURAL = ModelMetadata.PLURAL
SLICES = ModelSourceSlice.PLURAL


def _record(identity: WorkerIdentity, source: WorkerSource) -> SourceRecord:
    return SourceRecord(
        worker_id=f"{source.pod}/{source.rank}",
        identity=identity,
        endpoint=source.endpoint,
        agent_name=source.agent_name or "",
        state=source.state.value,
        tensor_count=source.tensor_count or 0,
        total_bytes=source.bytes or 0,
        node=source.node,
        zone=source.zone,
        domain=source.domain,
        pod_uid=source.pod_uid,
        active_transfers=source.active_transfers,
        updated_at=source.updated_at.timestamp() if source.updated_at else time.time(),
    )


def _entries(piece: ModelSourceSlice) -> list[WorkerSource]:
    return piece.status.sources if piece.status else []


def all_sources(resources: list[ModelMetadata], slices: list[ModelSourceSlice]) -> list[SourceRecord]:
    """Every entry of every slice, with the identity of its ModelMetadata (inspection: `modelexpress sources ls`)."""
    specs = {r.metadata.get("name"): r.spec.model_dump(include=set(ModelMetadataSpec.model_fields)) for r in resources}
    records = []
    seen: set[tuple[str | None, str]] = set()
    for piece in slices:
        spec = specs.get(piece.spec.model_metadata)
        if spec is None:  # its ModelMetadata is being deleted (the slice goes with it)
            continue
        for source in _entries(piece):
            if (source.pod_uid, source.endpoint) in seen:  # in two slices for a moment while they are merged
                continue
            seen.add((source.pod_uid, source.endpoint))
            identity = WorkerIdentity(**{**spec, "gpu_architecture": source.gpu_architecture, "rank": source.rank,
                                         "weights_version": source.weights_version or ""})  # fmt: skip
            records.append(_record(identity, source))
    return records


def sources_for(slices: list[ModelSourceSlice], identity: WorkerIdentity, near: Placement | None) -> list[SourceRecord]:
    """Ready sources of `identity` (same rank, GPU architecture and weight version) in `slices`, best first."""
    wanted = identity.identity_hash()
    arch = identity.gpu_architecture or None
    found: list[SourceRecord] = []
    seen: set[tuple[str | None, str]] = set()
    for piece in slices:
        if piece.metadata.get("labels", {}).get(IDENTITY_LABEL) != wanted:
            continue
        for source in _entries(piece):
            if source.state != SourceState.READY or source.rank != identity.rank:
                continue
            if (source.gpu_architecture or None) != arch or (source.weights_version or "") != identity.weights_version:
                continue
            if (source.pod_uid, source.endpoint) in seen:  # in two slices for a moment while they are merged
                continue
            seen.add((source.pod_uid, source.endpoint))
            found.append(_record(identity, source))
    return rank_sources(found, near)


class KubernetesRegistry(SourceRegistry):
    """Sources read from ModelMetadata resources of one namespace."""

    def __init__(self, namespace: str, api: client.ApiClient | None = None, watch: bool = False) -> None:
        self.namespace = namespace
        self.api = api or kube_api_client()
        self.custom = client.CustomObjectsApi(self.api)
        self._cache: dict[str, ModelSourceSlice] = {}
        self._topology: dict[str, NodeTopology | None] = {}
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if watch:
            self._thread = threading.Thread(target=self._watch_loop, name="mx-registry-watch", daemon=True)
            self._thread.start()

    # Workers only read: the operator records them from their status streams.
    def publish(self, record: SourceRecord) -> None:
        log.debug("kubernetes registry: %s is recorded by the operator, not by the worker", record.worker_id)

    def set_state(self, worker_id: str, state: str) -> None:
        pass

    def remove(self, worker_id: str) -> None:
        pass

    def list_sources(self) -> list[SourceRecord]:
        return all_sources(self.list_all(), self._list_slices()[0])

    def placed(self, near: Placement | None) -> Placement | None:
        """`near` completed with its node's zone and domain from the operator's topology ConfigMap, where
        the worker's settings do not give them (read once; none when the ConfigMap is absent)."""
        if near is None or not near.node or (near.zone and near.domain):
            return near
        if near.node not in self._topology:
            self._topology[near.node] = self._node_topology(near.node)
        known = self._topology[near.node]
        if known is None:
            return near
        return Placement(near.node, near.domain or known.domain, near.zone or known.zone)

    def _node_topology(self, node: str) -> NodeTopology | None:
        try:
            found = client.CoreV1Api(self.api).read_namespaced_config_map(TOPOLOGY_CONFIGMAP, self.namespace)
        except client.ApiException as exc:
            log.debug("no node topology (%s/%s: %s); sources ranked by node only", self.namespace,
                      TOPOLOGY_CONFIGMAP, exc.reason)  # fmt: skip
            return None
        raw = (found.data or {}).get(node)
        try:
            return NodeTopology.model_validate_json(raw) if raw else None
        except ValidationError:
            log.warning("%s/%s holds an unreadable entry for node %s", self.namespace, TOPOLOGY_CONFIGMAP, node)
            return None

    def find_ready(self, identity: WorkerIdentity, near: Placement | None = None) -> list[SourceRecord]:
        if self._thread is None:
            slices, _ = self._list_slices(rank_selector(identity.identity_hash(), identity.rank))
        else:
            if not self._synced.wait(30):
                raise TimeoutError(
                    f"no ModelSourceSlice listing from the API server in 30 s (namespace {self.namespace})"
                )
            slices = list(self._cache.values())
        return sources_for(slices, identity, self.placed(near))

    def list_all(self) -> list[ModelMetadata]:
        """Every ModelMetadata of the namespace, read now."""
        reply = cast(
            dict[str, Any], self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL)
        )
        return [r for r in (_parse(ModelMetadata, item) for item in reply.get("items", [])) if r is not None]

    def _list_slices(self, selector: str | None = None) -> tuple[list[ModelSourceSlice], str]:
        """The namespace's slices (those matching the label `selector`), and the list's resourceVersion."""
        reply = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, SLICES, label_selector=selector or ""
            ),
        )
        found = [r for r in (_parse(ModelSourceSlice, item) for item in reply.get("items", [])) if r is not None]
        return found, reply["metadata"]["resourceVersion"]

    def _watch_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                items, version = self._list_slices()
                self._cache = {r.metadata["name"]: r for r in items}
                self._synced.set()
                backoff = 0.5
                stream = watch.Watch()
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    API_GROUP,
                    API_VERSION,
                    self.namespace,
                    SLICES,
                    resource_version=version,
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        stream.stop()
                        return
                    name = event["object"]["metadata"]["name"]
                    if event["type"] == "DELETED":
                        self._cache.pop(name, None)
                    elif (parsed := _parse(ModelSourceSlice, event["object"])) is not None:
                        self._cache[name] = parsed
            except Exception as exc:  # 410 Gone, connection reset, ...: list again
                log.debug("ModelSourceSlice watch restarts: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def close(self) -> None:
        self._stop.set()
        self.api.close()


def _parse(kind: type[Parsed], raw: dict[str, Any]) -> Parsed | None:
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        log.warning("ignoring %s %s: %s", kind.__name__, raw.get("metadata", {}).get("name"), exc)
        return None
