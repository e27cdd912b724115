"""Caller authentication of the server in the cluster: a ServiceAccount token checked with a TokenReview.

With `MX_SERVER_REQUIRE_TOKEN=true`, *ensure* and *delete* need `authorization: Bearer <token>`
metadata; the API server says whether the token is valid (and carries the audiences asked for).
Answers are remembered for a minute by the token's hash; the token itself is never logged or kept.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, cast

from kubernetes import client

log = logging.getLogger(__name__)
CACHE_SECONDS = 60.0


class TokenReviewer:
    """Who a bearer token belongs to, according to the API server (None: not authenticated)."""

    def __init__(self, api: client.ApiClient, audiences: list[str] | None = None) -> None:
        self.auth = client.AuthenticationV1Api(api)
        self.audiences = audiences or None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str | None]] = {}

    def review(self, token: str) -> str | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < CACHE_SECONDS:
                return hit[1]
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=self.audiences))
        reply = cast(
            dict[str, Any], self.auth.api_client.sanitize_for_serialization(self.auth.create_token_review(body))
        )
        status = reply.get("status") or {}
        user = (status.get("user") or {}).get("username") if status.get("authenticated") else None
        with self._lock:
            self._cache[key] = (now, user)
        if user is None:
            log.info(
                "a caller presented a token the API server did not accept: %s",
                status.get("error") or "not authenticated",
            )
        return user


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip() or None
    return None
