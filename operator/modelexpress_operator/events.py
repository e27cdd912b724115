"""Kubernetes Events the operator posts about its resources (best effort: a failed Event never fails work)."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from modelexpress_operator.metrics import API_REQUESTS, ERRORS

log = logging.getLogger(__name__)
COMPONENT = "modelexpress-operator"


def post_event(api: client.ApiClient, involved: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    """Record an Event on `involved` (apiVersion, kind, name, namespace, uid)."""
    now = datetime.now(UTC)
    namespace = involved["namespace"]
    body = {
        "metadata": {"name": f"{involved['name'][:200]}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": involved,
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "count": 1,
    }
    try:
        API_REQUESTS.labels("create", "events").inc()
        client.CoreV1Api(api).create_namespaced_event(namespace, body)
    except Exception as exc:
        ERRORS.labels("event").inc()
        log.warning("could not post Event %s on %s/%s: %s", reason, namespace, involved["name"], exc)
