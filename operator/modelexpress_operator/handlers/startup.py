"""Operator start-up and shutdown: where kopf keeps its own state, timeouts, metrics, and our runtime."""

from __future__ import annotations

from typing import Any

import kopf

from modelexpress import API_GROUP
from modelexpress.metrics import serve_metrics
from modelexpress_operator.runtime import Runtime
from modelexpress_operator.settings import OperatorSettings


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    # Our status schemas are structural, so the API server prunes kopf's default `status.kopf`
    # bookkeeping; keep progress and diff-base in annotations of our own group instead.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=API_GROUP)
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # Every API call has a deadline: a hung connection must not stall reconciliation forever.
    settings.networking.request_timeout = 30
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Opted-in pods are only read; never post kopf's handler-failure Events on them.
    settings.posting.level = 30
    operator_settings = OperatorSettings()
    settings.peering.lifetime = operator_settings.peering_lifetime_secs
    serve_metrics(operator_settings.metrics_port)
    memo.runtime = Runtime.start(operator_settings, settings)
    logger.info(
        "following workers with a %.0fs status TTL (%s)",
        operator_settings.status_ttl_secs,
        "standalone"
        if settings.peering.standalone
        else f"peering {settings.peering.name}, priority {settings.peering.priority}",
    )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.close()


@kopf.on.probe(id="watchedWorkers")
async def watched_workers(memo: kopf.Memo, **_: Any) -> int:
    """Liveness/readiness endpoint payload (`--liveness`): how many worker streams are followed."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    return len(runtime.fleet) if runtime else 0
