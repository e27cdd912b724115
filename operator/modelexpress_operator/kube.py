"""The operator's `kubernetes` client: the same credentials kopf logs in with (in-cluster, else $KUBECONFIG).

kopf watches and patches through its own client; the recorder, the pod listing and Events use the
`kubernetes` package. Both must act as the same identity, so both decide here.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

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


def api_client() -> client.ApiClient:
    """A client with the operator's credentials, read now (not when `kubernetes` was imported)."""
    configuration = client.Configuration()
    if in_cluster():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig_path(), client_configuration=configuration)  # type: ignore[no-untyped-call]
    # One writer task per ModelMetadata plus pod listings: more than urllib3's default of 4 connections.
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)
