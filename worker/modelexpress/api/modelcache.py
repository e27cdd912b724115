"""The ModelCache resource: "have this model on a PVC", with download progress and eviction."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from modelexpress.api.common import (
    DNS1123_SUBDOMAIN,
    REVISION_MESSAGE,
    REVISION_PATTERN,
    Condition,
    KubeModel,
    LocalObjectReference,
    Quantity,
    ResourceRequirements,
    Toleration,
    conditions_field,
    pattern_message,
)
from modelexpress.durations import Duration

SOURCE_PATTERN = r"^((hf|ngc|s3|gs|az)://[^\s]+|/[^\s]*)$"
RETRY_ANNOTATION = "modelexpress.io/retry"
"""A new value on a Failed or Evicted ModelCache starts one more download now, without changing its spec
(`kubectl annotate mxcache NAME modelexpress.io/retry="$(date +%s)" --overwrite`)."""


class ModelCachePhase(StrEnum):
    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    READY = "Ready"
    FAILED = "Failed"
    EVICTED = "Evicted"


AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


class ModelCacheStorage(KubeModel):
    """Where the model lands: an existing claim, or a new PVC the operator creates and owns."""

    # Merged with KubeModel's configuration by pydantic; the rule is enforced by the API server too.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.claimName) && has(self.size))",
                    "message": "set storage.claimName (use an existing PVC) or storage.size (create one), not both",
                },
                {
                    "rule": "!has(self.size) || (type(self.size) == int ? self.size > 0 : "
                    "(isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0'))))",
                    "message": "storage.size must be a positive quantity such as 200Gi",
                },
            ]
        }
    )

    claim_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """An existing PersistentVolumeClaim to download into; the operator never deletes it."""
    size: Quantity | None = None
    """Size of the PVC to create (e.g. 200Gi); when unset it is sized from the source's metadata plus headroom."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """StorageClass of the PVC to create (unset: the cluster default)."""
    access_modes: list[AccessMode] | None = Field(default=None, min_length=1)
    """Access modes of the PVC to create (default ReadWriteMany when several nodes read it, else ReadWriteOnce)."""
    retention_policy: Literal["Delete", "Retain"] = "Delete"
    """What happens to a PVC the operator created when the ModelCache is deleted."""

    @model_validator(mode="after")
    def _claim_or_size(self) -> ModelCacheStorage:
        if self.claim_name is not None and self.size is not None:
            raise ValueError("set storage.claimName (use an existing PVC) or storage.size (create one), not both")
        if self.size is not None and not _positive(self.size):
            raise ValueError("storage.size must be a positive quantity such as 200Gi")
        return self


def _positive(quantity: int | str) -> bool:
    """Whether a quantity is above zero: its sign, and a non-zero digit before any suffix."""
    if isinstance(quantity, int):
        return quantity > 0
    text = quantity.strip()
    return not text.startswith("-") and any(c in "123456789" for c in text.split("e")[0].split("E")[0])


class ModelCacheEviction(KubeModel):
    """When the cached model may be removed to free space."""

    unused_threshold: Duration | None = Field(
        default=None,
        json_schema_extra=pattern_message(
            "eviction.unusedThreshold must be a duration such as 7d, 12h, 1h30m or 45s, or a number of seconds"
        ),
    )
    """Evict after this long without use (e.g. 7d); unset: never by age."""
    pinned: bool = False
    """Never evict this model."""


class ModelCacheSpec(KubeModel):
    """What to download and where to keep it."""

    source: str = Field(
        min_length=2,
        max_length=2048,
        pattern=SOURCE_PATTERN,
        json_schema_extra=pattern_message(
            "source must be hf://org/name, ngc://org/team/model:version, s3://bucket/prefix, gs://bucket/prefix, "
            "az://container/prefix or an absolute path, without spaces"
        ),
    )
    """Model location: hf://org/name, ngc://org/team/model:version, s3://, gs://, az://, or an absolute path."""
    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
        json_schema_extra=pattern_message(REVISION_MESSAGE),
    )
    """Branch, tag or commit to download (hf); the resolved commit is recorded in status.resolvedRevision."""
    allow_patterns: list[str] | None = None
    """Only files matching one of these glob patterns are downloaded."""
    ignore_patterns: list[str] | None = None
    """Files matching one of these glob patterns are skipped."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret whose keys become the download Job's environment (HF_TOKEN, NGC_API_KEY, AWS_*, ...)."""
    storage: ModelCacheStorage = Field(default_factory=ModelCacheStorage)
    """Where the model is stored."""
    eviction: ModelCacheEviction = Field(default_factory=ModelCacheEviction)
    """Eviction policy of this cache entry."""
    resources: ResourceRequirements | None = None
    """Resources of the download Job's container."""
    node_selector: dict[str, str] | None = None
    """Node labels the download Job's pod must match."""
    tolerations: list[Toleration] | None = None
    """Tolerations of the download Job's pod."""


class ModelCacheProgress(KubeModel):
    """Download progress, updated at a bounded rate."""

    bytes_done: int = Field(default=0, ge=0)
    """Bytes downloaded so far."""
    bytes_total: int | None = Field(default=None, ge=0)
    """Total bytes to download, from the source's metadata."""
    files_done: int = Field(default=0, ge=0)
    """Files completed."""
    files_total: int | None = Field(default=None, ge=0)
    """Files to download."""
    percent: int = Field(default=0, ge=0, le=100)
    """Whole-percent progress, for `kubectl get`."""


class ModelCacheStatus(KubeModel):
    """Observed state of the cache entry, written by the operator only."""

    phase: ModelCachePhase = ModelCachePhase.PENDING
    """Pending, Downloading, Ready, Failed or Evicted."""
    conditions: list[Condition] = conditions_field(
        "The Ready condition; its reason says what the cache waits for or why it failed."
    )
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation last acted on."""
    progress: ModelCacheProgress | None = None
    """Download progress."""
    resolved_revision: str | None = None
    """Commit the revision resolved to."""
    size_bytes: int | None = Field(default=None, ge=0)
    """Size of the cached model on the PVC."""
    path: str | None = None
    """Path of the model on the PVC (Hugging Face hub cache layout)."""
    claim_name: str | None = None
    """PersistentVolumeClaim holding the model."""
    nodes: list[Annotated[str, StringConstraints(max_length=253)]] = Field(default_factory=list, max_length=64)
    """Nodes the model is on when the PVC's volume is node-local (its PersistentVolume's required node
    affinity); empty for network storage, which every node reads."""
    job_name: str | None = None
    """Name of the current Job: the sizing Job while the source's size is read, then the download Job."""
    source_bytes: int | None = Field(default=None, ge=0)
    """Size of the source as the sizing Job read it (with the cache's credentials), for the PVC's size."""
    last_used_time: datetime | None = None
    """When a worker last loaded this model."""
    next_retry_time: datetime | None = None
    """When the operator starts the next Job after a retryable failure, or tries again to create one the API
    server refused; empty when no retry is planned."""
    last_handled_retry: str | None = Field(default=None, max_length=256)
    """The value of the `modelexpress.io/retry` annotation the operator last acted on."""


class ModelCache(KubeModel):
    """A model downloaded once onto a PVC for workers to read."""

    KIND: ClassVar[str] = "ModelCache"
    PLURAL: ClassVar[str] = "modelcaches"
    SINGULAR: ClassVar[str] = "modelcache"
    SHORT_NAMES: ClassVar[list[str]] = ["mxcache"]
    PRINTER_COLUMNS: ClassVar[list[dict[str, Any]]] = [
        {"name": "Source", "type": "string", "jsonPath": ".spec.source"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "description": "what it waits for or why it failed",
        },
        {
            "name": "Progress",
            "type": "integer",
            "jsonPath": ".status.progress.percent",
            "description": "percent",
        },
        {"name": "Size", "type": "integer", "jsonPath": ".status.sizeBytes", "priority": 1},
        {"name": "Revision", "type": "string", "jsonPath": ".status.resolvedRevision", "priority": 1},
        {
            "name": "Nodes",
            "type": "string",
            "jsonPath": ".status.nodes",
            "priority": 1,
            "description": "node-local volume's nodes",
        },
        {
            "name": "Next-Retry",
            "type": "string",
            "jsonPath": ".status.nextRetryTime",
            "priority": 1,
            "description": "when the next Job starts after a retryable failure",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]

    api_version: str = "modelexpress.io/v1alpha1"
    kind: str = "ModelCache"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelCacheSpec
    status: ModelCacheStatus | None = None
