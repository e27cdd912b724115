"""How the operator authenticates: the in-cluster ServiceAccount (at $KUBERNETES_SERVICE_HOST), else the kubeconfig named by $KUBECONFIG now.

kopf's stock client login calls `kubernetes.config.load_kube_config()`, whose default path is read
from $KUBECONFIG when the `kubernetes` package is first imported. Reading it at login time instead
lets one process run the operator under a kubeconfig chosen after start-up (a ServiceAccount's, in
the RBAC tests), and gives a clear error naming what was tried.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config

from modelexpress_operator.kube import in_cluster, kubeconfig_path


def connection_from_kubeconfig(path: str | None, context: str | None = None) -> kopf.ConnectionInfo:
    """kopf credentials from a kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)."""
    target = client.Configuration()
    config.load_kube_config(config_file=path, context=context, client_configuration=target)
    return _connection(target)


def connection_in_cluster() -> kopf.ConnectionInfo:
    """kopf credentials of the pod's ServiceAccount, for the API server at $KUBERNETES_SERVICE_HOST:PORT
    as client-go and the `kubernetes` package find it. kopf's own in-cluster login dials the name
    kubernetes.default.svc, which only resolves where the cluster runs a DNS for pods."""
    target = client.Configuration()
    config.load_incluster_config(client_configuration=target)  # reads the token again at each login
    return _connection(target)


def _connection(target: client.Configuration) -> kopf.ConnectionInfo:
    header = target.get_api_key_with_prefix("BearerToken") or target.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").partition(" ")
    return kopf.ConnectionInfo(
        server=target.host,
        ca_path=target.ssl_ca_cert,
        insecure=not target.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        username=target.username or None,
        password=target.password or None,
        certificate_path=target.cert_file,
        private_key_path=target.key_file,
    )


@kopf.on.login()
def login(logger: kopf.Logger, **kwargs: Any) -> kopf.ConnectionInfo | None:
    if in_cluster():
        try:
            return connection_in_cluster()
        except config.ConfigException as exc:
            raise kopf.LoginError(f"cannot authenticate with the pod's ServiceAccount: {exc}") from exc
    path = kubeconfig_path()
    try:
        info = connection_from_kubeconfig(path)
    except (config.ConfigException, OSError) as exc:
        raise kopf.LoginError(
            f"cannot authenticate: not in a cluster and the kubeconfig {path} is unusable ({exc}); "
            "set KUBECONFIG or run in a pod with a ServiceAccount"
        ) from exc
    logger.debug("authenticated with kubeconfig %s against %s", path, info.server)
    return info
