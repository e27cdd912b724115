"""ModelCache handlers: accept the spec and record the initial status."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import ModelCacheSpec
from modelexpress_operator.errors import invalid_spec
from modelexpress_operator.status import initial_cache_status


@kopf.on.resume(API_GROUP, API_VERSION, "modelcaches")
@kopf.on.create(API_GROUP, API_VERSION, "modelcaches")
def accept_cache(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    try:
        ModelCacheSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise invalid_spec(exc) from exc
    patch.status.update(initial_cache_status(dict(status), int(meta.get("generation") or 0)))
