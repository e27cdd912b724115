"""When the operator plans a new download Job after a failure: only for retryable reasons, only with
attempts left, never before `MX_OPERATOR_RETRY_INTERVAL_SECS`, and only for the generation that failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelexpress.api import ModelCacheStatus
from modelexpress_operator.caches.status import mark_failed, retry_due, wire
from modelexpress_operator.settings import OperatorSettings


def _failed(reason: str, attempt: int, limit: int = 3, interval: float = 60) -> dict[str, object]:
    settings = OperatorSettings(retry_limit=limit, retry_interval_secs=interval)
    status = ModelCacheStatus(observed_generation=2, job_name=f"c-dl-g2-{attempt}")
    mark_failed(status, "c", 2, reason, "the download Job failed", settings)
    return wire(status)


def _message(status: dict[str, object]) -> str:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    return str(conditions[-1]["message"])


def test_a_retryable_failure_plans_the_next_attempt_after_the_interval() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    status = _failed("NetworkError", attempt=1, interval=60)
    assert status["phase"] == "Failed"
    assert "attempt 2 of 3 starts in 60s" in _message(status)
    planned = datetime.fromisoformat(str(status["nextRetryTime"]))
    assert before + timedelta(seconds=60) <= planned <= datetime.now(UTC) + timedelta(seconds=60)
    wait = retry_due(status, 2, datetime.now(UTC))
    assert wait is not None and 55 < wait <= 60  # not yet
    assert retry_due(status, 2, planned + timedelta(seconds=1)) == 0  # due
    assert retry_due(status, 3, planned + timedelta(seconds=1)) is None  # the spec changed since


def test_the_last_attempt_plans_nothing_and_says_how_to_go_on() -> None:
    status = _failed("NetworkError", attempt=3, limit=3)
    assert status["nextRetryTime"] is None  # sent as null: a merge patch removes a stale plan
    assert "no attempt left (MX_OPERATOR_RETRY_LIMIT=3): fix the cause, then try again with" in _message(status)
    assert 'kubectl annotate mxcache c modelexpress.io/retry="$(date +%s)" --overwrite' in _message(status)
    assert retry_due(status, 2, datetime.now(UTC) + timedelta(days=1)) is None


@pytest.mark.parametrize("reason", ["NotFound", "Unauthorized", "InsufficientStorage"])
def test_a_failure_retrying_cannot_fix_is_final(reason: str) -> None:
    status = _failed(reason, attempt=1)
    assert status["nextRetryTime"] is None and "attempt" not in _message(status)
    assert "once fixed, try again with `kubectl annotate mxcache c modelexpress.io/retry=" in _message(status)
    assert retry_due(status, 2, datetime.now(UTC) + timedelta(days=1)) is None
