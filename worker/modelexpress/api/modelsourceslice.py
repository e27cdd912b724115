"""The ModelSourceSlice resource: up to 100 of one ModelMetadata's source entries, all of one rank.

A model's source workers are recorded in slices, as a Service's endpoints are in EndpointSlices: many
small objects, each owned by the ModelMetadata and labelled with its name and identity, so that one
worker's change rewrites one slice of at most 100 entries (about 45 KB) and watchers receive only
that slice, whatever the size of the fleet. The ModelMetadata keeps the summary (counts, phase,
conditions). Only the operator writes slices; workers list and watch them by label.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from modelexpress.api.common import KubeModel
from modelexpress.api.modelmetadata import IDENTITY_LABEL, WorkerSource, label_value

MAX_SLICE_SOURCES = 100
"""Entries one slice holds at most (the schema refuses more)."""
METADATA_LABEL = "modelexpress.io/model-metadata"
"""Label holding the name of the ModelMetadata a slice belongs to."""
SLICE_IDENTITY_LABEL = IDENTITY_LABEL
"""Label holding the identity hash of the slice's ModelMetadata (what a worker selects on)."""
RANK_LABEL = "modelexpress.io/rank"
"""Label holding the rank of the slice's entries (a worker selects its own rank's slices)."""


class ModelSourceSliceSpec(KubeModel):
    """Which ModelMetadata the slice belongs to."""

    model_metadata: str = Field(
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.modelMetadata is immutable: a slice belongs to one model"}
            ]
        },
    )
    """Name of the ModelMetadata (same namespace) whose sources the slice holds; it owns the slice. It never
    changes (the operator repairs a slice by what it belongs to)."""
    rank: int | None = Field(
        default=None,
        ge=0,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.rank is immutable: a slice holds entries of one rank"}
            ]
        },
    )
    """The rank (TP x PP) of every entry in the slice; a worker reads only its own rank's slices."""


class ModelSourceSliceStatus(KubeModel):
    """Source entries, written by the operator only."""

    sources: list[WorkerSource] = Field(default_factory=list, max_length=MAX_SLICE_SOURCES)
    """One entry per worker rank (at most 100); an entry stays in its slice while its pod lives."""
    source_count: int = Field(default=0, ge=0)
    """Entries in the slice."""
    ready_sources: int = Field(default=0, ge=0)
    """Entries in state Ready."""


class ModelSourceSlice(KubeModel):
    """Up to 100 source workers of one ModelMetadata."""

    KIND: ClassVar[str] = "ModelSourceSlice"
    PLURAL: ClassVar[str] = "modelsourceslices"
    SINGULAR: ClassVar[str] = "modelsourceslice"
    SHORT_NAMES: ClassVar[list[str]] = ["mxslice"]
    # No column lists the entries: the API server prints only the first value of a `[*]` path. Every
    # entry: `kubectl get mxslice -o custom-columns=POD:.status.sources[*].pod,...` (kubectl joins them).
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "Model-Metadata", "type": "string", "jsonPath": ".spec.modelMetadata"},
        {"name": "Rank", "type": "integer", "jsonPath": ".spec.rank"},
        {"name": "Sources", "type": "integer", "jsonPath": ".status.sourceCount"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readySources"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    api_version: str = "modelexpress.io/v1alpha1"
    kind: str = "ModelSourceSlice"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelSourceSliceSpec
    status: ModelSourceSliceStatus | None = None


def metadata_selector(metadata_name: str) -> str:
    """The label selector of a ModelMetadata's slices. A label value holds 63 characters and a name up to
    253, so names sharing their first 63 can share it: readers also check `spec.modelMetadata`."""
    return f"{METADATA_LABEL}={label_value(metadata_name)}"


def rank_selector(identity_hash: str, rank: int) -> str:
    """The label selector of one rank's slices of a model identity: what a worker reads before a pull."""
    return f"{SLICE_IDENTITY_LABEL}={identity_hash},{RANK_LABEL}={rank}"


def slice_name(metadata_name: str, rank: int, index: int) -> str:
    """The name of a ModelMetadata's slice number `index` of rank `rank`: `<name>-r<rank>-s<index>`, within
    253 characters."""
    suffix = f"-r{rank}-s{index}"
    return metadata_name[: 253 - len(suffix)] + suffix
