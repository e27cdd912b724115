"""ModelMetadata handlers: validate the identity, label it, and hand the resource to the status recorder.

The recorder is the only writer of the status (sources, counts, phase, conditions,
observedGeneration); these handlers tell it about new, resumed, edited and deleted resources.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import ModelMetadataSpec
from modelexpress.api.modelmetadata import ModelIdentity
from modelexpress_operator.errors import invalid_spec
from modelexpress_operator.metrics import RECONCILES
from modelexpress_operator.runtime import Runtime


@kopf.on.resume(API_GROUP, API_VERSION, "modelmetadatas")
@kopf.on.create(API_GROUP, API_VERSION, "modelmetadatas")
@kopf.on.update(API_GROUP, API_VERSION, "modelmetadatas", field="spec")
async def reconcile_metadata(spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    try:
        identity = ModelMetadataSpec.model_validate(dict(spec))
    except ValidationError as exc:
        RECONCILES.labels("modelmetadatas", "invalid").inc()
        raise invalid_spec(exc) from exc
    labels = ModelIdentity.of(identity).labels()
    if any(meta.get("labels", {}).get(k) != v for k, v in labels.items()):
        patch.metadata.labels.update(labels)
    runtime: Runtime = memo.runtime
    runtime.recorder.spec_changed(
        meta["namespace"], meta["name"], identity, int(meta.get("generation") or 0), meta["uid"]
    )
    RECONCILES.labels("modelmetadatas", "ok").inc()


@kopf.on.delete(API_GROUP, API_VERSION, "modelmetadatas", optional=True)
async def forget_metadata(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.recorder.resource_deleted(meta["namespace"], meta["name"])
