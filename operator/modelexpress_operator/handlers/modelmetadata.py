"""ModelMetadata handlers: validate the identity and keep counts, phase and conditions in status."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import ModelMetadataSpec
from modelexpress_operator.errors import invalid_spec
from modelexpress_operator.status import metadata_status


@kopf.on.resume(API_GROUP, API_VERSION, "modelmetadatas")
@kopf.on.create(API_GROUP, API_VERSION, "modelmetadatas")
@kopf.on.update(API_GROUP, API_VERSION, "modelmetadatas", field="spec")
def reconcile_metadata(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    try:
        identity = ModelMetadataSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise invalid_spec(exc) from exc
    patch.status.update(metadata_status(identity, dict(status), int(meta.get("generation") or 0)))
