"""Pure builder of the ModelMetadata status the operator writes: counts, phase and the Ready condition."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from modelexpress.api import (
    ModelMetadataSpec,
    ModelMetadataStatus,
    SourceState,
    WorkerSource,
)
from modelexpress.api.common import set_condition


def ready_replicas(spec: ModelMetadataSpec, sources: list[WorkerSource]) -> int:
    """Instances that have every rank 0..TP*PP-1 Ready."""
    ranks: dict[str, set[int]] = defaultdict(set)
    for source in sources:
        if source.state == SourceState.READY:
            ranks[source.instance or source.pod].add(source.rank)
    wanted = set(range(spec.world_size))
    return sum(1 for held in ranks.values() if wanted <= held)


def newest_version(sources: list[WorkerSource]) -> str | None:
    """The newest weight version a Ready source serves: by number when every version is one (training
    steps), else the greatest string."""
    versions = {s.weights_version for s in sources if s.state == SourceState.READY and s.weights_version}
    if not versions:
        return None
    if all(v.isdigit() for v in versions):
        return max(versions, key=int)
    return max(versions)


def metadata_status(spec: ModelMetadataSpec, current: dict[str, Any] | None, generation: int) -> dict[str, Any]:
    """The full ModelMetadata status for the current sources: counts, phase, Ready condition."""
    status = ModelMetadataStatus.model_validate(current or {})
    replicas = ready_replicas(spec, status.sources)
    status.layout = spec.layout
    status.ready_sources = sum(1 for s in status.sources if s.state == SourceState.READY)
    status.ready_replicas = replicas
    status.nodes = sorted({s.node for s in status.sources if s.state == SourceState.READY and s.node})
    status.weights_version = newest_version(status.sources)
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
    return status.to_api()
