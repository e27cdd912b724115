"""The ModelMetadata resource: one model identity, and which workers hold its weights.

The spec is the identity that must match exactly for two workers to exchange weights; the status,
written only by the operator, lists the source workers (endpoints only: manifests and NIXL agent
metadata are served by each worker's gRPC WorkerService, never stored in etcd).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from modelexpress.api.common import Condition, KubeModel, LocalObjectReference, conditions_field

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"
Dtype = Literal["auto", "float16", "bfloat16", "float32"]


class ModelMetadataPhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"


class SourceState(StrEnum):
    INITIALIZING = "Initializing"
    READY = "Ready"
    DRAINING = "Draining"
    STALE = "Stale"


class ModelMetadataSpec(KubeModel):
    """The model identity: only workers with identical identities (and GPU architecture) exchange weights."""

    model_name: str = Field(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN)
    """Model name as the engine loads it, e.g. meta-llama/Llama-3.1-8B-Instruct."""
    revision: str = Field(default="main", min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")
    """Model revision (branch, tag or commit)."""
    engine: str = Field(default="vllm", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
    """Inference engine whose post-processed weights are exchanged."""
    engine_version: str | None = Field(default=None, max_length=63, pattern=r"^[A-Za-z0-9.+_-]+$")
    """Engine version; workers of different versions never exchange weights."""
    dtype: Dtype = "auto"
    """Weight dtype the engine loads with."""
    quantization: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
    """Quantization method (e.g. fp8); quantized weights travel as raw bytes with their scales."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=1024)
    """Tensor-parallel size (TP)."""
    pipeline_parallel_size: int = Field(default=1, ge=1, le=1024)
    """Pipeline-parallel size (PP)."""
    expert_parallel_size: int = Field(default=1, ge=1, le=1024)
    """Expert-parallel size (EP)."""
    gpu_architecture: str | None = Field(default=None, max_length=63, pattern=r"^[A-Za-z0-9._-]+$")
    """GPU architecture the weights were laid out for (e.g. sm_90); unset: recorded per source."""
    cache_ref: LocalObjectReference | None = None
    """A ModelCache to load from when no source exists."""

    @property
    def world_size(self) -> int:
        """Ranks in one instance: TP x PP."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def layout(self) -> str:
        """`TP8xPP2`-style label for printer columns."""
        return f"TP{self.tensor_parallel_size}xPP{self.pipeline_parallel_size}"


class WorkerSource(KubeModel):
    """One worker rank that holds (or is loading) the model's weights."""

    pod: str = Field(min_length=1, max_length=253)
    """Pod name of the worker."""
    pod_uid: str | None = Field(default=None, max_length=64)
    """UID of the pod, so that a replaced pod of the same name is never mistaken for this one."""
    instance: str | None = Field(default=None, max_length=253)
    """Engine instance the rank belongs to (all ranks of one instance share it)."""
    node: str | None = Field(default=None, max_length=253)
    """Node the pod runs on."""
    rank: int = Field(ge=0)
    """Global rank (TP x PP) of the worker."""
    endpoint: str = Field(min_length=1, max_length=512)
    """host:port of the worker's gRPC WorkerService."""
    agent_name: str | None = Field(default=None, max_length=253)
    """NIXL agent name of the worker."""
    state: SourceState = SourceState.INITIALIZING
    """Initializing, Ready, Draining or Stale."""
    tensor_count: int | None = Field(default=None, ge=0)
    """Tensors the worker serves."""
    bytes: int | None = Field(default=None, ge=0)
    """Bytes the worker serves."""
    updated_at: datetime | None = None
    """When the operator last heard from the worker."""


class ModelMetadataStatus(KubeModel):
    """Who holds the model, written by the operator only."""

    phase: ModelMetadataPhase = ModelMetadataPhase.PENDING
    """Pending until at least one instance has every rank Ready."""
    layout: str | None = None
    """TP x PP of the identity, for printer columns."""
    sources: list[WorkerSource] = Field(default_factory=list)
    """One entry per worker rank."""
    ready_sources: int = Field(default=0, ge=0)
    """Source entries in state Ready."""
    ready_replicas: int = Field(default=0, ge=0)
    """Instances with every rank Ready."""
    conditions: list[Condition] = conditions_field("Ready when at least one instance has every rank Ready.")
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation last acted on."""


class ModelMetadata(KubeModel):
    """A model identity and the workers that can serve its weights."""

    KIND: ClassVar[str] = "ModelMetadata"
    PLURAL: ClassVar[str] = "modelmetadatas"
    SINGULAR: ClassVar[str] = "modelmetadata"
    SHORT_NAMES: ClassVar[list[str]] = ["mxmeta", "mm"]
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "Model", "type": "string", "jsonPath": ".spec.modelName"},
        {"name": "Layout", "type": "string", "jsonPath": ".status.layout", "description": "TP x PP"},
        {"name": "Ready-Sources", "type": "integer", "jsonPath": ".status.readySources"},
        {
            "name": "Replicas",
            "type": "integer",
            "jsonPath": ".status.readyReplicas",
            "description": "ready instances",
        },
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Revision", "type": "string", "jsonPath": ".spec.revision", "priority": 1},
        {"name": "Dtype", "type": "string", "jsonPath": ".spec.dtype", "priority": 1},
        {"name": "Engine", "type": "string", "jsonPath": ".spec.engine", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    api_version: str = "modelexpress.io/v1alpha1"
    kind: str = "ModelMetadata"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelMetadataSpec
    status: ModelMetadataStatus | None = None


class ModelIdentity(ModelMetadataSpec):
    """The identity fields alone, with a stable resource name derived from them."""

    def resource_name(self) -> str:
        """A DNS-1123 name unique to this identity: readable slug plus a hash of every field."""
        digest = hashlib.sha256(repr(sorted(self.model_dump(exclude={"cache_ref"}).items())).encode()).hexdigest()[:10]
        slug = re.sub(r"[^a-z0-9]+", "-", self.model_name.lower()).strip("-")[:40].strip("-")
        return f"{slug}-{digest}" if slug else f"model-{digest}"
