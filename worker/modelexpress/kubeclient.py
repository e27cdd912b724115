"""The `kubernetes` client of every part that talks to the API server outside kopf (workers, Jobs, the
operator): in-cluster ServiceAccount credentials, unless a kubeconfig is chosen with $KUBECONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

from modelexpress.errors import UserError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def in_cluster() -> bool:
    """Running in a pod with a ServiceAccount token, and no kubeconfig chosen explicitly."""
    return bool(
        os.environ.get("KUBERNETES_SERVICE_HOST")
        and SERVICE_ACCOUNT_TOKEN.exists()
        and not os.environ.get("KUBECONFIG")
    )


def kubeconfig_path() -> str:
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


class KubeConfigError(UserError, RuntimeError):
    """No usable Kubernetes credentials; the message says where they were looked for."""


def kube_api_client(pool_size: int | None = None) -> client.ApiClient:
    """A client with those credentials, read now (not when `kubernetes` was imported)."""
    configuration = client.Configuration()
    try:
        if in_cluster():
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=kubeconfig_path(), client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        where = "the pod's ServiceAccount" if in_cluster() else f"kubeconfig {kubeconfig_path()}"
        raise KubeConfigError(
            f"no Kubernetes credentials ({where}: {exc}); set KUBECONFIG to a kubeconfig, or run in a pod"
        ) from None
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_namespace(explicit: str | None = None) -> str:
    """`MX_POD_NAMESPACE`, else the in-cluster ServiceAccount's namespace, else the kubeconfig's, else default."""
    if explicit:
        return explicit
    if _NAMESPACE_FILE.exists():
        return _NAMESPACE_FILE.read_text().strip()
    try:
        _, context = config.list_kube_config_contexts()
        return str(context.get("context", {}).get("namespace") or "default")
    except (config.ConfigException, OSError, TypeError):
        return "default"
