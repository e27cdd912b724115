"""The webhook's serving certificate in the cluster: shared by every operator replica through a
Secret, and the MutatingWebhookConfiguration's caBundle kept in step with its CA.

With `MX_OPERATOR_WEBHOOK_CERT_DIR` (cert-manager) the files are used as they are and nothing is
written. Otherwise the first replica creates the Secret (CA + serving certificate); later ones read
it; whoever finds it due for renewal replaces it (optimistic concurrency on resourceVersion) and
restarts, so every replica serves the new certificate with the CA the caBundle holds.
"""

from __future__ import annotations

import base64
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client

from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.webhook.certs import CertBundle, ensure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingFiles:
    certfile: str
    keyfile: str
    ca_pem: bytes | None
    changed: str | None = None
    """Why the certificate was (re)issued by this call, if it was."""


def dns_names(settings: OperatorSettings) -> list[str]:
    svc, ns = settings.webhook_service, settings.own_namespace()
    names = [f"{svc}.{ns}.svc", svc, f"{svc}.{ns}", f"{svc}.{ns}.svc.cluster.local"]
    return names + [s for s in settings.webhook_extra_sans if not _is_ip(s)]


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _decode(data: dict[str, str] | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}


def _write(bundle: CertBundle) -> tuple[str, str]:
    directory = Path(tempfile.mkdtemp(prefix="mx-webhook-"))
    (directory / "tls.crt").write_bytes(bundle.cert)
    (directory / "tls.key").write_bytes(bundle.key)
    (directory / "tls.key").chmod(0o600)
    return str(directory / "tls.crt"), str(directory / "tls.key")


def _owner(admission: client.AdmissionregistrationV1Api, settings: OperatorSettings) -> list[client.V1OwnerReference]:
    """The MutatingWebhookConfiguration as the Secret's owner: the operator makes the Secret at run time,
    so Helm does not know it, and without an owner it would outlive `helm uninstall` (the garbage
    collector deletes it with the configuration instead). None while the configuration is missing."""
    try:
        config = admission.read_mutating_webhook_configuration(settings.webhook_config_name)
    except client.ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return [client.V1OwnerReference(api_version="admissionregistration.k8s.io/v1", kind="MutatingWebhookConfiguration",
                                    name=config.metadata.name, uid=config.metadata.uid)]  # fmt: skip


def _secret_bundle(
    core: client.CoreV1Api, settings: OperatorSettings, owners: list[client.V1OwnerReference]
) -> tuple[CertBundle, str | None]:
    """The shared bundle, creating or renewing it; returns why it changed (None: as stored)."""
    namespace, name = settings.own_namespace(), settings.webhook_secret
    ips = [s for s in settings.webhook_extra_sans if _is_ip(s)]
    for _ in range(5):
        try:
            secret = core.read_namespaced_secret(name, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            secret = None
        existing = None
        if secret is not None:
            try:
                existing = CertBundle.from_secret_data(_decode(secret.data))
            except KeyError:
                existing = None
        bundle, reason = ensure(existing, dns_names(settings), ips)
        if reason is None:
            if owners and secret is not None and not secret.metadata.owner_references:
                secret.metadata.owner_references = owners
                core.replace_namespaced_secret(name, namespace, secret)  # made by a release that set none
            return bundle, None
        data = {k: base64.b64encode(v).decode() for k, v in bundle.as_secret_data().items()}
        metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/component": "webhook"}}
        if owners:
            metadata["ownerReferences"] = owners
        body = {
            "metadata": metadata,
            "type": "Opaque",
            "data": data,
        }
        try:
            if secret is None:
                core.create_namespaced_secret(namespace, body)
            else:
                metadata["resourceVersion"] = secret.metadata.resource_version
                core.replace_namespaced_secret(name, namespace, body)
        except client.ApiException as exc:
            if exc.status == 409:
                continue  # another replica wrote it first: use theirs
            raise
        log.info("webhook serving certificate issued into Secret %s/%s: %s", namespace, name, reason)
        return bundle, reason
    raise RuntimeError(f"Secret {namespace}/{name} kept changing under us; is another operator fighting over it?")


def sync_ca_bundle(admission: client.AdmissionregistrationV1Api, settings: OperatorSettings, ca_pem: bytes) -> bool:
    """Put `ca_pem` into every webhook of the configuration; True when something changed."""
    try:
        config = admission.read_mutating_webhook_configuration(settings.webhook_config_name)
    except client.ApiException as exc:
        if exc.status == 404:
            log.warning(
                "MutatingWebhookConfiguration %s does not exist: pods are not mutated until it is installed",
                settings.webhook_config_name,
            )
            return False
        raise
    wanted = base64.b64encode(ca_pem).decode()
    raw = cast(dict[str, Any], admission.api_client.sanitize_for_serialization(config))
    webhooks = raw.get("webhooks") or []
    if all((w.get("clientConfig") or {}).get("caBundle") == wanted for w in webhooks):
        return False
    for webhook in webhooks:
        webhook.setdefault("clientConfig", {})["caBundle"] = wanted
    admission.patch_mutating_webhook_configuration(settings.webhook_config_name, {"webhooks": webhooks})
    log.info("caBundle of MutatingWebhookConfiguration %s updated", settings.webhook_config_name)
    return True


def serving_files(api: client.ApiClient, settings: OperatorSettings) -> ServingFiles:
    """Certificate and key files for the webhook server, and the CA clients must trust."""
    if settings.webhook_cert_dir:
        directory = Path(settings.webhook_cert_dir)
        ca = directory / "ca.crt"
        return ServingFiles(
            str(directory / "tls.crt"), str(directory / "tls.key"), ca.read_bytes() if ca.exists() else None
        )
    admission = client.AdmissionregistrationV1Api(api)
    bundle, reason = _secret_bundle(client.CoreV1Api(api), settings, _owner(admission, settings))
    sync_ca_bundle(admission, settings, bundle.ca_cert)
    certfile, keyfile = _write(bundle)
    return ServingFiles(certfile, keyfile, bundle.ca_cert, reason)
