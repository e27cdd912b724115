"""Shapes shared by the custom resources: the camelCase base model, conditions, references, scheduling.

Conditions follow the Kubernetes convention (type/status/reason/message/lastTransitionTime,
observedGeneration) so `kubectl wait --for=condition=Ready` works on every kind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
REVISION_PATTERN = r"^[A-Za-z0-9._/-]+$"
REVISION_MESSAGE = "revision must be a branch, tag or commit: letters, digits and . _ / - only (e.g. main or v1.0)"
PATTERN_MESSAGE = "x-modelexpress-pattern-message"
"""Schema key of a pattern's human message: the CRD generator turns the pattern into a CEL rule with it."""


def pattern_message(message: str) -> JsonDict:
    """`json_schema_extra` for a field users get wrong: the API server refuses a mismatch with `message`
    (naming the field and the accepted forms) instead of printing the raw regular expression."""
    return {PATTERN_MESSAGE: message}


Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-int-or-string": True,
            PATTERN_MESSAGE: "must be a quantity such as 200Gi, 512Mi, 500m or 2",
        }
    ),
]
"""A Kubernetes resource quantity (`10Gi`, `500m`, `2`)."""


class KubeModel(BaseModel):
    """Base of every API shape: camelCase on the wire, unknown fields refused, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """One observation of the resource's state, in the standard Kubernetes shape."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """Condition type, e.g. Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024, min_length=1, pattern=CONDITION_REASON)
    """CamelCase reason for the last transition, for machines."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail of the last transition."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation this condition was computed from."""


# Conditions are a map keyed by type, so server-side apply and strategic merges treat them as such.
CONDITIONS_SCHEMA: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def conditions_field(description_owner: str) -> Any:
    """A `conditions` list field with the Kubernetes list-map markers."""
    return Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA, description=description_owner)


def now() -> datetime:
    """The current time, truncated to seconds as the API server stores it."""
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
) -> list[Condition]:
    """A new conditions list with `type_` set; `lastTransitionTime` moves only when the status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed_at = previous.last_transition_time if previous and previous.status == status else now()
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=changed_at,
        observed_generation=observed_generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


class LocalObjectReference(KubeModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the referenced object."""


class Toleration(KubeModel):
    """A pod toleration, as in the core API."""

    key: str | None = None
    """Taint key the toleration applies to; empty with operator Exists matches all taints."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (default Equal)."""
    value: str | None = None
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = None
    """How long a NoExecute taint is tolerated before eviction."""


class ResourceRequirements(KubeModel):
    """Compute resources of a container, as in the core API."""

    # Bounded so the API server can budget the per-value CEL rule of Quantity.
    limits: dict[str, Quantity] | None = Field(default=None, max_length=32)
    """Most of each resource the container may use."""
    requests: dict[str, Quantity] | None = Field(default=None, max_length=32)
    """Resources the scheduler reserves for the container."""
