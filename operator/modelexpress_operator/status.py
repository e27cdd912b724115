"""Pure builders of what the operator writes: a ModelMetadata's summary status (counts, nodes, version,
phase, the Ready condition) and its slices' statuses (the entries)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from modelexpress.api import (
    ModelMetadataSpec,
    ModelMetadataStatus,
    SourceState,
    WorkerSource,
)
from modelexpress.api.common import Condition, set_condition
from modelexpress.api.modelmetadata import MAX_STATUS_NODES
from modelexpress.api.modelsourceslice import ModelSourceSliceStatus


def ready_replicas(spec: ModelMetadataSpec, sources: Sequence[WorkerSource]) -> int:
    """Instances that have every rank 0..TP*PP-1 Ready."""
    ranks: dict[str, set[int]] = defaultdict(set)
    for source in sources:
        if source.state == SourceState.READY:
            ranks[source.instance or source.pod].add(source.rank)
    wanted = set(range(spec.world_size))
    return sum(1 for held in ranks.values() if wanted <= held)


def newest_version(sources: Sequence[WorkerSource]) -> str | None:
    """The newest weight version a Ready source serves: by number when every version is one (training
    steps), else the greatest string."""
    versions = {s.weights_version for s in sources if s.state == SourceState.READY and s.weights_version}
    if not versions:
        return None
    if all(v.isdigit() for v in versions):
        return max(versions, key=int)
    return max(versions)


def metadata_status(
    spec: ModelMetadataSpec, sources: Sequence[WorkerSource], conditions: list[Condition], generation: int
) -> dict[str, Any]:
    """The ModelMetadata status summarising `sources`: counts, nodes, version, phase, Ready condition.

    The entries themselves go to the slices; `sources` is null in the result, which a merge patch
    turns into removing the list releases before slices wrote."""
    status = ModelMetadataStatus(conditions=conditions)
    replicas = ready_replicas(spec, sources)
    status.layout = spec.layout
    status.ready_sources = sum(1 for s in sources if s.state == SourceState.READY)
    status.ready_replicas = replicas
    nodes = sorted({s.node for s in sources if s.state == SourceState.READY and s.node})
    status.nodes, status.node_count = nodes[:MAX_STATUS_NODES], len(nodes)
    status.weights_version = newest_version(sources)
    status.observed_generation = generation
    if replicas:
        status.phase = status.phase.READY
        status.conditions = set_condition(
            status.conditions,
            "Ready",
            "True",
            "SourcesReady",
            f"{replicas} instance(s) with every rank Ready",
            generation,
        )
    else:
        status.phase = status.phase.PENDING
        status.conditions = set_condition(
            status.conditions,
            "Ready",
            "False",
            "NoReadyInstance",
            f"waiting for an instance with all {spec.world_size} rank(s) Ready",
            generation,
        )
    return {**status.to_api(), "sources": None}


def slice_status(sources: Sequence[WorkerSource]) -> dict[str, Any]:
    """The status of a slice holding `sources` (in a stable order: instance, rank, pod)."""
    ordered = sorted(sources, key=lambda s: (s.instance or s.pod, s.rank, s.pod_uid or ""))
    return ModelSourceSliceStatus(
        sources=ordered,
        source_count=len(ordered),
        ready_sources=sum(1 for s in ordered if s.state == SourceState.READY),
    ).to_api()
