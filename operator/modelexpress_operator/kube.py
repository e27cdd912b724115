"""The operator's `kubernetes` client: the same credentials kopf logs in with (in-cluster, else $KUBECONFIG).

kopf watches and patches through its own client; the recorder, the pod listing and Events use the
`kubernetes` package. Both must act as the same identity, so both decide with `modelexpress.kubeclient`.
"""

from __future__ import annotations

from kubernetes import client

from modelexpress.kubeclient import in_cluster, kube_api_client, kubeconfig_path

__all__ = ["api_client", "in_cluster", "kubeconfig_path"]


def api_client() -> client.ApiClient:
    # One writer task per ModelMetadata plus pod listings: more than urllib3's default of 4 connections.
    return kube_api_client(pool_size=32)
