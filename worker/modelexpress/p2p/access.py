"""Who may read a source's weights: peers that prove who they are, admitted by a stated policy.

With `MX_PEER_AUTH=kubernetes`, every WorkerService call must carry `authorization: Bearer <token>`,
a pod-bound ServiceAccount token (audience `MX_PEER_AUDIENCE`, `modelexpress`: a projected token the
API server would refuse for anything else). The source asks the API server who holds it
(TokenReview) and reads that pod. The caller is admitted when the pod exists with the token's UID,
is opted in (`modelexpress.io/p2p: enabled`), sits in an allowed namespace (the source's own by
default; `MX_PEER_NAMESPACES` adds others, `*` any) and, with `MX_PEER_SELECTOR`, carries matching
labels. The users in `MX_PEER_TRUSTED_USERS` (the operator, which follows every worker's status
stream) are admitted without a pod. A refusal is `UNAUTHENTICATED` (no or bad token) or
`PERMISSION_DENIED` (not allowed), with the reason, counted in `modelexpress_peer_refusals_total`;
tokens never appear in logs. Without admission there is no manifest and no agent metadata, so no
NIXL connection either. Decisions are cached briefly by token hash (tokenreview.CACHE_SECONDS).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from kubernetes import client

from modelexpress import metrics
from modelexpress.expiring import ExpiringCache
from modelexpress.tokenreview import CACHE_SECONDS, TokenReviewer, bearer_token

log = logging.getLogger(__name__)
OPT_IN = ("modelexpress.io/p2p", "enabled")
AUDIENCE = "modelexpress"


class RefusedError(Exception):
    """A caller that may not read this source; `code` and the reason it is told."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class PeerPolicy:
    """Which authenticated callers a source admits."""

    namespace: str
    """The source's own namespace: its opted-in pods are admitted."""
    namespaces: tuple[str, ...] = ()
    """More namespaces whose opted-in pods are admitted (`*`: every namespace)."""
    selector: dict[str, str] | None = None
    """Labels the caller's pod must carry as well (equality terms: `team=a,tier=serving`)."""
    trusted_users: tuple[str, ...] = ()
    """User names admitted without a pod (the operator's ServiceAccount)."""

    @staticmethod
    def parse_selector(text: str | None) -> dict[str, str] | None:
        """`a=b,c=d` as a dict; ValueError naming the term that is not `key=value`."""
        if not text or not text.strip():
            return None
        terms = {}
        for term in text.split(","):
            key, sep, value = term.strip().partition("=")
            if not sep or not key.strip():
                raise ValueError(f"MX_PEER_SELECTOR term {term.strip()!r}: expected key=value")
            terms[key.strip()] = value.strip()
        return terms


class PeerAccess:
    """Admits or refuses WorkerService callers by their token and their pod."""

    def __init__(self, api: client.ApiClient, policy: PeerPolicy, audience: str = AUDIENCE) -> None:
        self.policy = policy
        self.reviewer = TokenReviewer(api, [audience])
        self.core = client.CoreV1Api(api)
        # (namespace, name) -> the pod as read, or None when it does not exist (a list: a cacheable answer)
        self._pods: ExpiringCache[tuple[str, str], list[dict[str, Any] | None]] = ExpiringCache(CACHE_SECONDS)

    def admit(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
        """Who the caller is (for the log), or RefusedError with the reason."""
        token = bearer_token(metadata)
        if token is None:
            raise RefusedError(
                grpc.StatusCode.UNAUTHENTICATED, "no ServiceAccount token: this source admits authenticated peers only"
            )
        try:
            user, why = self.reviewer.review_with_reason(token)
        except Exception as exc:  # fail closed, and say so
            raise RefusedError(
                grpc.StatusCode.UNAVAILABLE, f"cannot check the token now (TokenReview failed: {type(exc).__name__})"
            ) from None
        if user is None:
            raise RefusedError(grpc.StatusCode.UNAUTHENTICATED, f"the token was not accepted by the API server ({why})")
        if user.username in self.policy.trusted_users:
            return user.username
        account, pod = user.service_account, user.pod
        if account is None or pod is None:
            raise RefusedError(grpc.StatusCode.PERMISSION_DENIED, f"{user.username} presented a token bound to no pod")
        namespace = account[0]
        allowed = {self.policy.namespace, *self.policy.namespaces}
        if "*" not in allowed and namespace not in allowed:
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"pods of namespace {namespace} may not read this model (MX_PEER_NAMESPACES)",
            )
        found = self._pod(namespace, pod[0])
        if found is None or (found.get("metadata") or {}).get("uid") != pod[1]:
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED, f"pod {namespace}/{pod[0]} of the token no longer exists"
            )
        meta = found.get("metadata") or {}
        if (meta.get("annotations") or {}).get(OPT_IN[0]) != OPT_IN[1]:
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"pod {namespace}/{pod[0]} is not opted in ({OPT_IN[0]}: {OPT_IN[1]})",
            )
        labels = meta.get("labels") or {}
        wanted = self.policy.selector or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            raise RefusedError(
                grpc.StatusCode.PERMISSION_DENIED, f"pod {namespace}/{pod[0]} does not match MX_PEER_SELECTOR"
            )
        return f"pod {namespace}/{pod[0]}"

    def _pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        hit = self._pods.get((namespace, name))
        if hit is not None:
            return hit[0]
        try:
            pod = self.core.read_namespaced_pod(name, namespace)
            found: dict[str, Any] | None = self.core.api_client.sanitize_for_serialization(pod)
        except client.ApiException as exc:
            if exc.status == 403:  # this source's own RBAC: say so where its operator will look, and to the caller
                reason = (
                    f"this source may not read pods in namespace {namespace} to check pod {name}: grant its "
                    f"ServiceAccount get on pods there (the chart does for workers.namespaces) or remove "
                    f"{namespace} from MX_PEER_NAMESPACES"
                )
                log.warning("%s", reason)
                raise RefusedError(grpc.StatusCode.UNAVAILABLE, reason) from None
            if exc.status != 404:
                raise RefusedError(
                    grpc.StatusCode.UNAVAILABLE, f"cannot read pod {namespace}/{name} now ({exc.reason})"
                ) from None
            found = None
        self._pods.put((namespace, name), [found])
        return found


class AccessInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]  # generic in the stubs only
    """Applies `PeerAccess` to every call of the services named (gRPC health stays open)."""

    def __init__(self, access: PeerAccess, services: tuple[str, ...]) -> None:
        self.access = access
        self.prefixes = tuple(f"/{s}/" for s in services)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if not details.method.startswith(self.prefixes):
            return continuation(details)
        try:
            who = self.access.admit(details.invocation_metadata)
        except RefusedError as refused:
            metrics.PEER_REFUSALS.labels(refused.code.name.lower()).inc()
            log.info("refused %s: %s", details.method.rsplit("/", 1)[-1], refused.reason)
            handler = continuation(details)
            return _refusal(handler, refused) if handler is not None else None
        log.debug("%s admitted to %s", who, details.method)
        return continuation(details)


def _refusal(handler: grpc.RpcMethodHandler[Any, Any], refused: RefusedError) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape that only aborts with the refusal."""

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(refused.code, f"peer refused: {refused.reason}")

    if handler.response_streaming:

        def abort_stream(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(refused.code, f"peer refused: {refused.reason}")
            yield  # pragma: no cover - never reached

        return grpc.unary_stream_rpc_method_handler(
            abort_stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
