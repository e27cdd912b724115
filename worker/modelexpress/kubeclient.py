"""A `kubernetes` client for code running in a worker pod or Job: in-cluster credentials, else $KUBECONFIG."""

from __future__ import annotations

import os

from kubernetes import client, config


def kube_api_client() -> client.ApiClient:
    """A client with in-cluster credentials, else those of $KUBECONFIG (read now, not at import)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return client.ApiClient(configuration)
