"""The admission webhook: inject ModelExpress settings into opted-in pods, refuse what cannot work.

Served by kopf's webhook server with the certificate from `webhook/serving.py`; the
MutatingWebhookConfiguration (from the chart) points at path `/inject-modelexpress`. Its
`failurePolicy: Ignore` means pods are still created while the operator is down, just without
injection (they load from their usual source, without peer transfer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any, cast

import kopf
from kubernetes import client

from modelexpress import API_GROUP, API_VERSION
from modelexpress_operator.kube import api_client
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.webhook.mutation import (
    MODEL_CACHE,
    PREFER_MODEL_NODES,
    InjectionSettings,
    RefusedError,
    check,
    mutate,
)
from modelexpress_operator.webhook.serving import serving_files
from modelexpress_operator.workers import OPT_IN

log = logging.getLogger(__name__)
WEBHOOK_ID = "inject-modelexpress"
RENEWAL_CHECK_SECS = 12 * 3600


@kopf.on.startup()
async def webhook_server(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    operator = OperatorSettings()
    if not operator.webhook_enabled:
        # kopf insists on a server once a mutating handler is registered; this one never listens.
        settings.admission.server = _no_webhook_server
        return
    api = api_client()
    files = await asyncio.to_thread(serving_files, api, operator)
    settings.admission.server = kopf.WebhookServer(
        addr=operator.webhook_bind,
        port=operator.webhook_port,
        certfile=files.certfile,
        pkeyfile=files.keyfile,
        cadata=files.ca_pem,
    )
    settings.admission.managed = None  # the chart owns the MutatingWebhookConfiguration
    logger.info("admission webhook on %s:%d (/%s)", operator.webhook_bind, operator.webhook_port, WEBHOOK_ID)
    if not operator.webhook_cert_dir:
        asyncio.get_running_loop().create_task(_renewal(api, operator), name="mx-webhook-renewal")


async def _no_webhook_server(_fn: Any) -> AsyncIterator[Any]:
    """The webhook is disabled (MX_OPERATOR_WEBHOOK_ENABLED=false): serve nothing, forever."""
    await asyncio.Event().wait()
    yield  # pragma: no cover - never reached; makes this an async generator


async def _renewal(api: client.ApiClient, operator: OperatorSettings) -> None:
    """Reissue before expiry; a new certificate is served after a restart, so restart (the Deployment
    brings the replica back with the new files; the others follow when they see the change)."""
    while True:
        await asyncio.sleep(RENEWAL_CHECK_SECS)
        try:
            files = await asyncio.to_thread(serving_files, api, operator)
        except Exception as exc:  # retried at the next check
            log.warning("webhook certificate check failed: %s", exc)
            continue
        if files.changed:
            log.warning("webhook certificate renewed (%s); restarting to serve it", files.changed)
            os.kill(os.getpid(), signal.SIGTERM)


def _model_cache(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, "modelcaches", name
        )
        return found
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _model_nodes(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    """The nodes holding the model of ModelMetadata `name` (none when it does not exist yet)."""
    try:
        found = client.CustomObjectsApi(api).get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, "modelmetadatas", name
        )
    except client.ApiException as exc:
        if exc.status == 404:
            log.info("%s: no ModelMetadata %s/%s yet, so no node preference", PREFER_MODEL_NODES, namespace, name)
            return []
        raise
    return list((found.get("status") or {}).get("nodes") or [])


@kopf.on.mutate("v1", "pods", id=WEBHOOK_ID, operations=["CREATE"], annotations={OPT_IN: "enabled"})
def inject(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    pod = dict(body)
    namespace = str(body.metadata.namespace or "default")
    name = (body.metadata.annotations or {}).get(MODEL_CACHE)
    runtime = getattr(memo, "runtime", None)
    api = runtime.api if runtime is not None else api_client()
    cache = _model_cache(api, namespace, name) if name else None
    preferred = (body.metadata.annotations or {}).get(PREFER_MODEL_NODES)
    nodes = _model_nodes(api, namespace, preferred) if preferred else []
    try:
        check(pod, namespace, cache)
    except RefusedError as exc:
        raise kopf.AdmissionError(str(exc), code=400) from None
    operator = runtime.settings if runtime is not None else OperatorSettings()
    injection = InjectionSettings(
        server_url=operator.server_url or f"modelexpress-server.{operator.own_namespace()}.svc:8001",
        worker_port=operator.default_worker_port,
        status_ttl_secs=operator.status_ttl_secs,
        peer_trusted_user=(
            f"system:serviceaccount:{operator.own_namespace()}:{operator.service_account}"
            if operator.peer_auth
            else None
        ),
        worker_tls_secret=operator.worker_tls_secret,
    )
    patch.fns.append(lambda target: mutate(cast(dict[str, Any], target), cache, injection, nodes))
