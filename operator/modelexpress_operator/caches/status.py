"""The status machine of a ModelCache, pure: the conditions and phases a reconcile, a Job's outcome or a
retry lead to, when the next attempt is due, and which changes are told as Events. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from modelexpress.api import ModelCacheStatus
from modelexpress.api.common import set_condition
from modelexpress_operator.caches.naming import attempt_of, retry_command
from modelexpress_operator.settings import OperatorSettings

RETRYABLE = {"NetworkError", "IntegrityError", "BackoffLimitExceeded", "DeadlineExceeded", "DownloadFailed"}
_PROGRESS = {"Sizing", "Downloading", "Retrying", "Downloaded", "Evicted"}
"""Ready reasons that are a cache's normal course; any other is a Warning Event."""
REFUSED_RETRY_SECS = 15
"""Pause before asking the API server again for a Job it refused (as for a refused PVC at creation)."""


def wire(status: ModelCacheStatus) -> dict[str, Any]:
    """The status as the operator writes it (a merge patch): `nextRetryTime`, which only the operator
    writes, is sent as null once cleared; absent fields are left alone (the Job's pod writes `progress`)."""
    return {"nextRetryTime": None, **status.to_api()}


def ready_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def event_of(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event a status change is told with: when the Ready condition's
    reason or message changes (a phase change, a failure, a retry, an eviction); Warning when the cache
    failed or waits on something to fix, Normal for its progress. None when nothing is to be told."""
    old, new = ready_condition(before), ready_condition(after)
    if new is None or (
        old is not None and (old.get("reason"), old.get("message")) == (new.get("reason"), new.get("message"))
    ):
        return None
    kind = "Normal" if after.get("phase") != "Failed" and new.get("reason") in _PROGRESS else "Warning"
    return kind, str(new.get("reason") or "Unknown"), str(new.get("message") or "")


def mark(
    status: ModelCacheStatus, generation: int, reason: str, message: str, ready: Literal["True", "False"] = "False"
) -> None:
    """Set the Ready condition (of this generation)."""
    status.conditions = set_condition(status.conditions, "Ready", ready, reason, message, generation)


def mark_waiting(status: ModelCacheStatus, generation: int, reason: str, message: str) -> None:
    status.phase = status.phase.PENDING
    mark(status, generation, reason, message)


def mark_failed(
    status: ModelCacheStatus, name: str, generation: int, reason: str, message: str, settings: OperatorSettings
) -> None:
    """Phase Failed with its reason; after a retryable failure with attempts left, the next Job is
    planned `MX_OPERATOR_RETRY_INTERVAL_SECS` from now (`nextRetryTime`) and the message says so."""
    status.phase = status.phase.FAILED
    status.next_retry_time = None
    if reason in RETRYABLE and status.job_name:
        attempt, limit = attempt_of(status.job_name, generation), settings.retry_limit
        if attempt < limit:
            delay = settings.retry_interval_secs
            status.next_retry_time = (datetime.now(UTC) + timedelta(seconds=delay)).replace(microsecond=0)
            message = f"{message}; attempt {attempt + 1} of {limit} starts in {delay:g}s"
        else:
            message = (
                f"{message}; no attempt left (MX_OPERATOR_RETRY_LIMIT={limit}): "
                f"fix the cause, then try again with `{retry_command(name)}`"
            )
    else:
        message = f"{message}; once fixed, try again with `{retry_command(name)}` (or change the spec)"
    mark(status, generation, reason, message)


def mark_downloaded(
    status: ModelCacheStatus, source: str, result: dict[str, Any], nodes: list[str], generation: int
) -> None:
    """The download Job completed: what it reported (revision, size, path) and where the volume is."""
    status.phase = status.phase.READY
    status.resolved_revision = result.get("resolvedRevision")
    status.size_bytes = result.get("sizeBytes")
    status.path = result.get("relativePath")  # relative to the volume's root, wherever it is mounted
    status.nodes = nodes
    total = status.size_bytes or (status.progress.bytes_total if status.progress else None)
    status.progress = status.progress or None
    if status.progress is not None and total is not None:
        status.progress.bytes_done, status.progress.percent = total, 100
    status.last_used_time = datetime.now(UTC).replace(microsecond=0)
    revision = (status.resolved_revision or "?")[:12]
    mark(status, generation, "Downloaded", f"{source}@{revision} is on {status.claim_name}", ready="True")


def retry_due(status: dict[str, Any], generation: int, now: datetime) -> float | None:
    """Seconds until the planned retry of this generation (0: now); None when none is planned (a plan
    is only ever made with an attempt left, or for a retry the API server refused)."""
    parsed = ModelCacheStatus.model_validate(status or {})
    if (
        parsed.next_retry_time is None
        or parsed.observed_generation != generation
        or parsed.phase not in ("Failed", "Pending")
    ):
        return None
    return max(0.0, (parsed.next_retry_time - now).total_seconds())
