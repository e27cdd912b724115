"""API types of the ModelExpress custom resources (group `modelexpress.io`, version `v1alpha1`).

Pydantic models are the single source of truth: `make generate` writes `crds/*.yaml` from them
(`modelexpress.api.crd`), the operator and workers parse resources with them.
"""

from modelexpress.api.common import Condition, ConditionStatus, KubeModel, LocalObjectReference
from modelexpress.api.crd import CRD_KINDS, build_crd, crd_filename, structural_schema
from modelexpress.api.modelcache import (
    RETRY_ANNOTATION,
    ModelCache,
    ModelCacheEviction,
    ModelCachePhase,
    ModelCacheProgress,
    ModelCacheSpec,
    ModelCacheStatus,
    ModelCacheStorage,
)
from modelexpress.api.modelmetadata import (
    ModelIdentity,
    ModelMetadata,
    ModelMetadataPhase,
    ModelMetadataSpec,
    ModelMetadataStatus,
    SourceState,
    WorkerSource,
)
from modelexpress.api.modelsourceslice import (
    MAX_SLICE_SOURCES,
    METADATA_LABEL,
    RANK_LABEL,
    ModelSourceSlice,
    ModelSourceSliceSpec,
    ModelSourceSliceStatus,
    rank_selector,
    slice_name,
)

__all__ = [
    "CRD_KINDS",
    "MAX_SLICE_SOURCES",
    "METADATA_LABEL",
    "RANK_LABEL",
    "RETRY_ANNOTATION",
    "Condition",
    "ConditionStatus",
    "KubeModel",
    "LocalObjectReference",
    "ModelCache",
    "ModelCacheEviction",
    "ModelCachePhase",
    "ModelCacheProgress",
    "ModelCacheSpec",
    "ModelCacheStatus",
    "ModelCacheStorage",
    "ModelIdentity",
    "ModelMetadata",
    "ModelMetadataPhase",
    "ModelMetadataSpec",
    "ModelMetadataStatus",
    "ModelSourceSlice",
    "ModelSourceSliceSpec",
    "ModelSourceSliceStatus",
    "SourceState",
    "WorkerSource",
    "build_crd",
    "crd_filename",
    "rank_selector",
    "slice_name",
    "structural_schema",
]
