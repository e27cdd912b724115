"""pytest fixtures on the real control plane: started once per run, a fresh namespace per test.

Under `CI=true` a missing control plane fails the run; elsewhere the Kubernetes tests are skipped
with a message saying how to get the binaries (`tests/harness/controlplane.py`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelexpress_operator.rbac import OPERATOR_OWN_NAMESPACE_RULES, OPERATOR_RULES
from tests.harness.controlplane import (
    ROOT,
    ControlPlane,
    ControlPlaneUnavailableError,
    locate_binaries,
    start_control_plane,
)
from tests.harness.kube import make_api_client, service_account_token, wait_for, write_kubeconfig
from tests.harness.node import NodeHelper

GROUP, VERSION = "modelexpress.io", "v1alpha1"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        binaries = locate_binaries()
    except ControlPlaneUnavailableError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(str(exc))
    cp = start_control_plane(tmp_path_factory.mktemp("control-plane"), binaries, crd_dir=ROOT / "crds")
    previous = os.environ.get("KUBECONFIG")
    # kopf and the code under test find the cluster the way they would in a shell: through KUBECONFIG.
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)
    try:
        yield cp
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        cp.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> client.ApiClient:
    """An admin client (group system:masters)."""
    return make_api_client(control_plane.server, control_plane.admin_token, control_plane.ca_file)


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, with its default ServiceAccount in place (pods need it), deleted afterwards."""
    core = client.CoreV1Api(kube_api)
    name = f"mx-test-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name, "labels": {"modelexpress.io/test": "true"}}})

    def default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except client.ApiException:
            return False

    wait_for(default_sa, 30, what=f"default ServiceAccount in {name}")
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


@pytest.fixture
def custom_objects(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


ServiceAccountClient = Callable[..., tuple[client.ApiClient, Path]]


@pytest.fixture
def service_account_client(
    control_plane: ControlPlane, kube_api: client.ApiClient, tmp_path: Path
) -> ServiceAccountClient:
    """Factory: a client and kubeconfig authenticated as a ServiceAccount, optionally bound to a Role of `rules`."""

    def make(namespace: str, name: str, rules: list[dict[str, Any]] | None = None) -> tuple[client.ApiClient, Path]:
        token = service_account_token(kube_api, namespace, name)
        if rules is not None:
            rbac = client.RbacAuthorizationV1Api(kube_api)
            rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
            rbac.create_namespaced_role_binding(
                namespace,
                {
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            )
            _wait_until_authorized(kube_api, namespace, name, rules)
        kubeconfig = write_kubeconfig(
            tmp_path / f"kubeconfig-{name}", control_plane.server, token, control_plane.ca_file, name
        )
        return make_api_client(control_plane.server, token, control_plane.ca_file), kubeconfig

    return make


def _wait_until_authorized(kube_api: client.ApiClient, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    """Until the API server's authorizer knows a new binding (its caches follow the RBAC objects a moment
    later, longer on a loaded machine): the ServiceAccount may do the first verb of every rule."""
    reviews = client.AuthorizationV1Api(kube_api)
    user = f"system:serviceaccount:{namespace}:{name}"
    for rule in rules:
        attributes = {"namespace": namespace, "group": rule["apiGroups"][0], "resource": rule["resources"][0],
                      "verb": rule["verbs"][0], "name": (rule.get("resourceNames") or [""])[0]}  # fmt: skip
        body = {"spec": {"user": user, "groups": ["system:serviceaccounts"], "resourceAttributes": attributes}}
        wait_for(lambda body=body: reviews.create_subject_access_review(body).status.allowed, 30,  # type: ignore[misc]
                 what=f"{user} allowed to {attributes['verb']} {attributes['resource']}")  # fmt: skip


@pytest.fixture(scope="session")
def node(
    control_plane: ControlPlane, kube_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> NodeHelper:
    """The test node: binds pods and runs their containers as local processes."""
    return NodeHelper(kube_api, tmp_path_factory.mktemp("node-1"), control_plane.server, control_plane.ca_file)


@pytest.fixture
def operator_in_process(control_plane: ControlPlane, namespace: str) -> Iterator[Any]:
    """The real kopf operator, run in-process (`kopf.testing.KopfRunner`) and watching the test namespace."""
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "--verbose", "-m", "modelexpress_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.exception


def _bind_cluster_role(kube_api: client.ApiClient, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "modelexpress-operator", "namespace": namespace}],
        }
    )


def _bind_role(kube_api: client.ApiClient, namespace: str, account: str, rules: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": f"{account}-own"}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"{account}-own"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{account}-own"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def _unbind_cluster_role(kube_api: client.ApiClient, name: str) -> None:
    rbac = client.RbacAuthorizationV1Api(kube_api)
    with contextlib.suppress(client.ApiException):
        rbac.delete_cluster_role_binding(name)
    with contextlib.suppress(client.ApiException):
        rbac.delete_cluster_role(name)


@pytest.fixture
def operator_kubeconfig(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[Path]:
    """A kubeconfig of the `modelexpress-operator` ServiceAccount bound to exactly OPERATOR_RULES (cluster-wide)
    and OPERATOR_OWN_NAMESPACE_RULES (in the test namespace, the operator's own)."""
    token = service_account_token(kube_api, namespace, "modelexpress-operator")
    role = f"mx-operator-{namespace}"
    _bind_cluster_role(kube_api, namespace, role, OPERATOR_RULES)
    _bind_role(kube_api, namespace, "modelexpress-operator", OPERATOR_OWN_NAMESPACE_RULES)
    yield write_kubeconfig(
        tmp_path / "operator.kubeconfig", control_plane.server, token, control_plane.ca_file, "operator"
    )
    _unbind_cluster_role(kube_api, role)
