"""Operator settings applied at start-up: where kopf keeps its own state, and its timeouts."""

from __future__ import annotations

from typing import Any

import kopf

from modelexpress import API_GROUP


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our status schemas are structural, so the API server prunes kopf's default `status.kopf`
    # bookkeeping; keep progress and diff-base in annotations of our own group instead.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # Every API call has a deadline: a hung connection must not stall reconciliation forever.
    settings.networking.request_timeout = 30
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
