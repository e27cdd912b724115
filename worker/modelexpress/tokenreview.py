"""Caller authentication in the cluster: a ServiceAccount token checked with a TokenReview.

Used by the server (`MX_SERVER_REQUIRE_TOKEN=true`: *ensure* and *delete* need a token) and by
sources (`MX_PEER_AUTH=kubernetes`: every WorkerService call needs one). Callers send
`authorization: Bearer <token>` metadata; the API server says whether the token is valid, carries the
audiences asked for, and, for a pod-bound token, which pod holds it. Answers are remembered for
`CACHE_SECONDS` by the token's hash (a refusal for a few seconds); the token itself is never logged
or kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client

from modelexpress import PEER_TOKEN_FILE
from modelexpress.expiring import ExpiringCache

log = logging.getLogger(__name__)
CACHE_SECONDS = 60.0
REFUSAL_CACHE_SECONDS = 5.0
POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True)
class ReviewedUser:
    """The authenticated caller: its user name and, for a ServiceAccount token, where it comes from."""

    username: str
    extra: dict[str, list[str]] = field(default_factory=dict)

    @property
    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) of a ServiceAccount's token, else None."""
        parts = self.username.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return parts[2], parts[3]
        return None

    @property
    def pod(self) -> tuple[str, str] | None:
        """(name, uid) of the pod a pod-bound token belongs to (projected tokens are), else None."""
        names, uids = self.extra.get(POD_NAME) or [], self.extra.get(POD_UID) or []
        return (names[0], uids[0]) if names and uids else None


class TokenReviewer:
    """Who a bearer token belongs to, according to the API server (None: not authenticated)."""

    def __init__(self, api: client.ApiClient, audiences: list[str] | None = None) -> None:
        # A TokenReview's answer repeats the token, and the client library logs every response body at
        # DEBUG: in a process that checks tokens, its request log stays at INFO whatever the log level.
        rest = logging.getLogger("kubernetes.client.rest")
        if rest.level < logging.INFO:  # NOTSET included: its parent's level may be lowered later
            rest.setLevel(logging.INFO)
        self.auth = client.AuthenticationV1Api(api)
        self.audiences = audiences or None
        self._answers: ExpiringCache[str, tuple[ReviewedUser | None, str]] = ExpiringCache(
            lambda answer: CACHE_SECONDS if answer[0] is not None else REFUSAL_CACHE_SECONDS
        )

    def review(self, token: str) -> ReviewedUser | None:
        return self.review_with_reason(token)[0]

    def review_with_reason(self, token: str) -> tuple[ReviewedUser | None, str]:
        """The caller, or None and the API server's reason for refusing the token."""
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._answers.get(key)
        if hit is not None:
            return hit
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=self.audiences))
        reply = cast(
            dict[str, Any], self.auth.api_client.sanitize_for_serialization(self.auth.create_token_review(body))
        )
        status = reply.get("status") or {}
        user = None
        reason = str(status.get("error") or "not authenticated")
        if status.get("authenticated"):
            found = status.get("user") or {}
            user = ReviewedUser(str(found.get("username") or ""), dict(found.get("extra") or {}))
            reason = ""
        self._answers.put(key, (user, reason))
        if user is None:
            log.info("a caller presented a token the API server did not accept: %s", reason)
        return user, reason


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip() or None
    return None


def peer_token_metadata(token_file: str | None = None) -> list[tuple[str, str]]:
    """`authorization` metadata with this worker's peer token, read now (the kubelet rotates it), or
    none when there is no token file (peer authentication off)."""
    path = Path(token_file or os.environ.get("MX_PEER_TOKEN_FILE") or PEER_TOKEN_FILE)
    try:
        token = path.read_text().strip()
    except OSError:
        return []
    return [("authorization", f"Bearer {token}")] if token else []
