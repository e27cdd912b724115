"""What the API server said when it refused a request, as a condition's reason and message."""

from __future__ import annotations

import json
import re

from kubernetes import client


class Refused(Exception):  # noqa: N818 - a dependency refused or missing, retried later, not a bug
    """Something the cache needs was refused or is missing; `args` are the condition's reason and message."""


def api_refusal(exc: client.ApiException, what: str) -> tuple[str, str]:
    """(reason, message) of a request the API server refused: its own Status reason (Forbidden,
    Invalid, ...) and message, e.g. an exceeded ResourceQuota or a policy that rejects the object."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    reason = re.sub(r"[^A-Za-z0-9]", "", str(body.get("reason") or exc.reason or "")) or "ApiError"
    if not reason[0].isalpha():
        reason = "ApiError"
    message = str(body.get("message") or exc.reason or "no message")
    return reason, f"{what} was refused by the API server (HTTP {exc.status}): {message}; retried"
