"""ModelCache handlers: PVC and download Job from the spec, status from the Job, retention on delete.

The spec handlers and the Job-event handler both end in `CacheController`; a daemon per cache starts
a new Job when a retryable failure's `nextRetryTime` comes (nobody has to delete a Job by hand), and
another evicts a cache left unused. A new value of the `modelexpress.io/retry` annotation starts the
next attempt of a Failed or Evicted cache at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import RETRY_ANNOTATION, ModelCacheSpec
from modelexpress_operator.cachejobs import CACHE_LABEL
from modelexpress_operator.caches import retry_due
from modelexpress_operator.errors import invalid_spec
from modelexpress_operator.metrics import RECONCILES
from modelexpress_operator.runtime import Runtime

_RETRY_CHECK_SECS = 30.0
"""How often each cache's daemon looks at its live status for a retry that came due."""


def _spec(spec: kopf.Spec) -> ModelCacheSpec:
    try:
        return ModelCacheSpec.model_validate(dict(spec))
    except ValidationError as exc:
        RECONCILES.labels("modelcaches", "invalid").inc()
        raise invalid_spec(exc) from exc


@kopf.on.resume(API_GROUP, API_VERSION, "modelcaches")
@kopf.on.create(API_GROUP, API_VERSION, "modelcaches")
@kopf.on.update(API_GROUP, API_VERSION, "modelcaches", field="spec")
async def reconcile_cache(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    parsed = _spec(spec)
    runtime: Runtime = memo.runtime
    generation = int(meta.get("generation") or 0)
    result = await asyncio.to_thread(
        runtime.caches.reconcile, meta["namespace"], meta["name"], meta["uid"], parsed, generation, dict(status)
    )
    patch.status.update(result.status)
    if result.waiting is not None:
        RECONCILES.labels("modelcaches", "waiting").inc()
        raise kopf.TemporaryError(result.waiting, delay=15)
    RECONCILES.labels("modelcaches", "ok").inc()


@kopf.on.event(API_GROUP, API_VERSION, "modelcaches", annotations={RETRY_ANNOTATION: kopf.PRESENT})
async def retry_on_request(meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """`kubectl annotate mxcache NAME modelexpress.io/retry=...`: one more attempt now, without a spec
    change (after fixing a Secret, a quota, the hub; after an eviction). Level-triggered on every event
    of an annotated cache, since kopf keeps its own `modelexpress.io/` annotations out of its diffs; a
    value is acted on once (`status.lastHandledRetry`)."""
    if type == "DELETED" or _unanswered_retry(meta, status) is None:
        return  # the common case, every other event of an annotated cache: no API call
    await _answer_retry(memo.runtime, meta)


def _unanswered_retry(meta: kopf.Meta, status: Any) -> str | None:
    """The retry annotation's value when the status has not answered it yet."""
    token = (meta.get("annotations") or {}).get(RETRY_ANNOTATION)
    return str(token) if token and (status or {}).get("lastHandledRetry") != token else None


async def _answer_retry(runtime: Runtime, meta: kopf.Meta) -> None:
    outcome = await asyncio.to_thread(runtime.caches.requested_retry, str(meta["namespace"]), str(meta["name"]))
    if outcome != "handled":
        RECONCILES.labels("modelcaches", f"retry-{outcome}").inc()


@kopf.on.event("batch", "v1", "jobs", labels={CACHE_LABEL: kopf.PRESENT})
async def download_job_event(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    runtime: Runtime = memo.runtime
    await asyncio.to_thread(runtime.caches.job_changed, meta["namespace"], dict(body))


@kopf.on.event("", "v1", "pods", labels={CACHE_LABEL: kopf.PRESENT})
async def cache_job_pod_event(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """A Job pod stuck before its container starts (a missing credentials Secret) is reported on its cache."""
    if type == "DELETED":
        return
    runtime: Runtime = memo.runtime
    await asyncio.to_thread(runtime.caches.pod_changed, meta["namespace"], dict(body))


@kopf.daemon(API_GROUP, API_VERSION, "modelcaches", cancellation_timeout=5)
async def retry_failed_download(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any
) -> None:
    """Starts the next Job at the cache's `status.nextRetryTime` (planned after a retryable failure, or
    after the API server refused the last try). `body` is kopf's live view: waiting costs no API call.
    Also answers a retry request still unanswered a whole check after it was first seen (its event
    handler failed, and kopf does not run event handlers again)."""
    runtime: Runtime = memo.runtime
    check = min(_RETRY_CHECK_SECS, runtime.settings.retry_interval_secs)
    seen: str | None = None
    while not stopped:
        meta, status = body.meta, dict(body.get("status") or {})
        generation = int(meta.get("generation") or 0)
        unanswered = _unanswered_retry(meta, status)
        if unanswered is not None and unanswered == seen:
            try:
                await _answer_retry(runtime, meta)
            except Exception as exc:  # the next check tries again
                logger.warning("answering the retry request on %s failed: %s", meta["name"], exc)
        seen = unanswered
        due = retry_due(status, generation, datetime.now(UTC))
        if due is None or due > 0:
            await asyncio.sleep(check if due is None else min(due, check))
            continue
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        try:
            await asyncio.to_thread(
                runtime.caches.next_attempt, namespace, name, uid, _spec(body.spec), generation, status
            )
        except Exception as exc:  # the next check tries again
            logger.warning("retrying the download of %s failed: %s", name, exc)
            await asyncio.sleep(check)
            continue
        RECONCILES.labels("modelcaches", "retry-scheduled").inc()
        # kopf's view catches up with the status just written before the next check reads it
        await asyncio.sleep(min(1.0, check))


@kopf.daemon(API_GROUP, API_VERSION, "modelcaches", cancellation_timeout=5)
async def evict_unused_cache(
    name: str, namespace: str | None, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any
) -> None:
    """Checks every `MX_OPERATOR_EVICTION_CHECK_SECS` whether this cache has been unused for too long."""
    assert namespace is not None  # ModelCache is namespaced
    runtime: Runtime = memo.runtime
    while not stopped:
        await asyncio.sleep(runtime.settings.eviction_check_secs)
        try:
            current = await asyncio.to_thread(runtime.caches.kube.read, namespace, name)
            if current is None:
                continue  # being deleted: the daemon stops with it
            update = await asyncio.to_thread(
                runtime.caches.evict_if_unused,
                namespace,
                name,
                str(current["metadata"]["uid"]),
                ModelCacheSpec.model_validate(current.get("spec") or {}),
                int(current["metadata"].get("generation") or 0),
                current.get("status") or {},
                datetime.now(UTC),
            )
        except Exception as exc:  # the next check tries again
            logger.warning("eviction check of %s failed: %s", name, exc)
            continue
        if update.get("phase") == "Evicted":
            logger.info("evicted: %s", next(c["message"] for c in update["conditions"] if c["type"] == "Ready"))


@kopf.on.delete(API_GROUP, API_VERSION, "modelcaches")
async def release_cache(spec: kopf.Spec, meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    try:
        parsed = ModelCacheSpec.model_validate(dict(spec))
    except ValidationError:
        return  # never accepted, nothing was created
    logger.info(await asyncio.to_thread(runtime.caches.release, meta["namespace"], meta["name"], parsed))
