"""The ModelMetadata resource: one model identity, and which workers hold its weights.

The spec is the identity that must match exactly for two workers to exchange weights; the status,
written only by the operator, summarises the source workers (counts, nodes, phase). The entries
themselves (endpoints only: manifests and NIXL agent metadata are served by each worker's gRPC
WorkerService, never stored in etcd) live in the ModelSourceSlices the ModelMetadata owns.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from modelexpress.api.common import (
    REVISION_MESSAGE,
    REVISION_PATTERN,
    Condition,
    KubeModel,
    LocalObjectReference,
    conditions_field,
    pattern_message,
)

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"
WEIGHTS_VERSION_PATTERN = r"^[A-Za-z0-9._-]+$"
MAX_STATUS_NODES = 100
"""`status.nodes` lists at most this many nodes (`status.nodeCount` counts them all)."""
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

    model_name: str = Field(
        min_length=1,
        max_length=256,
        pattern=MODEL_NAME_PATTERN,
        json_schema_extra=pattern_message(
            "modelName must be a model name such as meta-llama/Llama-3.1-8B-Instruct: '/'-separated parts of "
            "letters, digits, '.', '_' and '-', each starting with a letter or digit"
        ),
    )
    """Model name as the engine loads it, e.g. meta-llama/Llama-3.1-8B-Instruct."""
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
        json_schema_extra=pattern_message(REVISION_MESSAGE),
    )
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
    gpu_architecture: str | None = Field(default=None, max_length=63)
    """GPU architecture the worker's weights are laid out for; targets only pull from their own."""
    state: SourceState = SourceState.INITIALIZING
    """Initializing, Ready, Draining or Stale."""
    tensor_count: int | None = Field(default=None, ge=0)
    """Tensors the worker serves."""
    bytes: int | None = Field(default=None, ge=0)
    """Bytes the worker serves."""
    zone: str | None = Field(default=None, max_length=63)
    """Zone of the node (its `topology.kubernetes.io/zone` label, or the operator's zone label)."""
    domain: str | None = Field(default=None, max_length=63)
    """Rack or NVLink domain of the node (the operator's domain label); targets in it prefer this source."""
    active_transfers: int = Field(default=0, ge=0)
    """Targets pulling from the worker at the last update; targets prefer the least loaded source."""
    weights_version: str | None = Field(default=None, max_length=128, pattern=WEIGHTS_VERSION_PATTERN)
    """The version of the weights the worker serves (an RL training step); unset: the checkpoint as
    published. Targets pull a version only from sources of exactly that version."""
    updated_at: datetime | None = None
    """When the entry last changed (state, load or counts); heartbeats alone do not rewrite it."""


TOPOLOGY_CONFIGMAP = "modelexpress-topology"
"""ConfigMap the operator keeps in each namespace with opted-in pods: node name -> `NodeTopology` (JSON)
of the nodes they run on, so a worker knows its own zone and domain without reading Node objects."""


class NodeTopology(KubeModel):
    """Where a node sits, from its labels (which labels: the operator's `topology` settings)."""

    zone: str | None = Field(default=None, max_length=63)
    domain: str | None = Field(default=None, max_length=63)


class ModelMetadataStatus(KubeModel):
    """Who holds the model, written by the operator only."""

    phase: ModelMetadataPhase = ModelMetadataPhase.PENDING
    """Pending until at least one instance has every rank Ready."""
    layout: str | None = None
    """TP x PP of the identity, for printer columns."""
    sources: list[WorkerSource] = Field(default_factory=list, max_length=5000)
    """Deprecated: where releases before ModelSourceSlices recorded the entries. The operator moves them
    into slices (the slices are written first) and then empties this list."""
    ready_sources: int = Field(default=0, ge=0)
    """Source entries in state Ready."""
    ready_replicas: int = Field(default=0, ge=0)
    """Instances with every rank Ready."""
    nodes: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list, max_length=MAX_STATUS_NODES
    )
    """Nodes holding the model: those of Ready sources, the first 100 by name (`kubectl get
    modelmetadatas -o wide`); the webhook can steer opted-in pods towards them
    (`modelexpress.io/prefer-model-nodes`)."""
    node_count: int = Field(default=0, ge=0)
    """Nodes holding the model, all of them (`nodes` lists at most 100)."""
    weights_version: str | None = Field(default=None, max_length=128)
    """The newest weight version a Ready source serves (numerically where every version is a number, as
    training steps are); unset when no Ready source serves a version."""
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
        {
            "name": "Version",
            "type": "string",
            "jsonPath": ".status.weightsVersion",
            "description": "newest weight version a Ready source serves (RL)",
        },
        {"name": "Revision", "type": "string", "jsonPath": ".spec.revision", "priority": 1},
        {
            "name": "Nodes",
            "type": "string",
            "jsonPath": ".status.nodes",
            "priority": 1,
            "description": "nodes holding the model",
        },
        {"name": "Dtype", "type": "string", "jsonPath": ".spec.dtype", "priority": 1},
        {"name": "Engine", "type": "string", "jsonPath": ".spec.engine", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    api_version: str = "modelexpress.io/v1alpha1"
    kind: str = "ModelMetadata"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelMetadataSpec
    status: ModelMetadataStatus | None = None


IDENTITY_LABEL = "modelexpress.io/identity"
"""Label holding `identity_hash()`: the operator finds the ModelMetadata of a worker's identity by it."""
_HASHED_FIELDS = (
    "model_name",
    "revision",
    "engine",
    "engine_version",
    "dtype",
    "quantization",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "expert_parallel_size",
)


def label_value(text: str) -> str:
    """`text` made a valid label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]+", ".", text)[:63].strip("._-")


class ModelIdentity(ModelMetadataSpec):
    """The identity fields alone, with a stable hash, resource name and labels derived from them.

    The GPU architecture is not part of the hash: one ModelMetadata lists the sources of every
    architecture (each source records its own), and targets pick sources of theirs.
    """

    def identity_hash(self) -> str:
        """16 hex digits over every identity field except the GPU architecture."""
        fields = self.model_dump(include=set(_HASHED_FIELDS))
        return hashlib.sha256(repr([(name, fields[name]) for name in _HASHED_FIELDS]).encode()).hexdigest()[:16]

    def resource_name(self) -> str:
        """A DNS-1123 name unique to this identity: readable slug plus the identity hash."""
        digest = self.identity_hash()[:10]
        slug = re.sub(r"[^a-z0-9]+", "-", self.model_name.lower()).strip("-")[:40].strip("-")
        return f"{slug}-{digest}" if slug else f"model-{digest}"

    def labels(self) -> dict[str, str]:
        """Labels that make the identity selectable (`kubectl get mm -l modelexpress.io/tp=8`)."""
        return {
            IDENTITY_LABEL: self.identity_hash(),
            "modelexpress.io/model": label_value(self.model_name),
            "modelexpress.io/revision": label_value(self.revision),
            "modelexpress.io/dtype": self.dtype,
            "modelexpress.io/tp": str(self.tensor_parallel_size),
            "modelexpress.io/pp": str(self.pipeline_parallel_size),
        }

    @classmethod
    def of(cls, spec: ModelMetadataSpec) -> ModelIdentity:
        return cls.model_validate(spec.model_dump(include=set(ModelMetadataSpec.model_fields)))
