"""The rendered chart installed into the real control plane, then used with exactly its RBAC.

Every object Helm renders is created through the API (the API server accepts the RBAC, the
webhook configuration, the Deployments...); the operator then runs here with a token of the
chart's operator ServiceAccount (not admin), the download Job's pod runs with the chart's cache-job
ServiceAccount, and a ModelCache goes to Ready through them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils

from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import GROUP, VERSION
from tests.harness.kube import condition, read_or_none, service_account_token, wait_for, write_kubeconfig
from tests.harness.node import NodeHelper
from tests.helpers.chart import VALUES_FILES, render, values_file
from tests.helpers.fake_hub import FakeHub

pytestmark = pytest.mark.k8s
FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x01" * (1 << 20)}
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


@pytest.fixture
def installed(kube_api: client.ApiClient, namespace: str) -> Iterator[list[dict[str, Any]]]:
    release = f"rel-{namespace[-8:]}"
    docs = render({"workers": {"namespaces": [namespace]}, "server": {"requireToken": True}}, namespace, release)
    created: list[dict[str, Any]] = []
    try:
        for doc in docs:
            utils.create_from_dict(kube_api, doc, namespace=doc["metadata"].get("namespace"))
            created.append(doc)
        yield docs
    finally:
        rbac, admission = client.RbacAuthorizationV1Api(kube_api), client.AdmissionregistrationV1Api(kube_api)
        for doc in created:
            if doc["kind"] not in CLUSTER_KINDS:
                continue  # namespaced objects go with the namespace
            delete = {
                "ClusterRole": rbac.delete_cluster_role,
                "ClusterRoleBinding": rbac.delete_cluster_role_binding,
                "MutatingWebhookConfiguration": admission.delete_mutating_webhook_configuration,
            }[doc["kind"]]
            try:
                delete(doc["metadata"]["name"])
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


def test_rendered_chart_is_accepted_and_its_rbac_runs_a_modelcache(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    installed: list[dict[str, Any]],
    control_plane: ControlPlane,
    node: NodeHelper,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kopf.testing import KopfRunner

    apps = client.AppsV1Api(kube_api)
    operator_deployment = next(
        d for d in installed if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    assert apps.read_namespaced_deployment(operator_deployment["metadata"]["name"], namespace).spec.replicas == 1
    # The webhook configuration was accepted; take it out again so that other namespaces' pods are not
    # sent to a Service with no endpoints here.
    admission = client.AdmissionregistrationV1Api(kube_api)
    assert admission.read_mutating_webhook_configuration("modelexpress-webhook").webhooks[0].failure_policy == "Ignore"
    admission.delete_mutating_webhook_configuration("modelexpress-webhook")

    env = {e["name"]: e.get("value") for e in operator_deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    sa = operator_deployment["spec"]["template"]["spec"]["serviceAccountName"]
    token = service_account_token(kube_api, namespace, sa)
    kubeconfig = write_kubeconfig(tmp_path / "operator", control_plane.server, token, control_plane.ca_file, sa)
    with FakeHub() as hub:
        hub.add("org/tiny", FILES)
        for key in ("MX_OPERATOR_WORKER_IMAGE", "MX_OPERATOR_JOB_SERVICE_ACCOUNT", "MX_STATUS_TTL_SECS"):
            monkeypatch.setenv(key, str(env[key]))
        monkeypatch.setenv("MX_OPERATOR_HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("MX_OPERATOR_NAMESPACE", namespace)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        args = ["run", "--standalone", "--namespace", namespace, "-m", "modelexpress_operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelcaches",
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelCache", "metadata": {"name": "tiny"},
                 "spec": {"source": "hf://org/tiny"}},
            )  # fmt: skip
            batch = client.BatchV1Api(kube_api)
            job = wait_for(lambda: read_or_none(batch.read_namespaced_job, "tiny-dl-g1-1", namespace), 30,
                           what="download Job")  # fmt: skip
            assert job.spec.template.spec.service_account_name == "modelexpress-cache-job"
            run = node.run_job_pod(namespace, "tiny-dl-g1-1", timeout=120)
            assert run.exit_code == 0, run.stderr[-2000:]

            def ready() -> dict[str, Any] | None:
                obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", "tiny")
                return obj if (obj.get("status") or {}).get("phase") == "Ready" else None

            cache = wait_for(ready, 60, what="ModelCache Ready")
            assert (condition(cache, "Ready") or {}).get("status") == "True"
            # The Job's pod reported progress with the chart's cache-job Role.
            assert cache["status"]["progress"]["filesTotal"] == 2
        assert runner.exception is None, runner.exception


# Kinds whose CRDs belong to cert-manager and the Prometheus Operator, not installed in this control
# plane: they are checked for shape in tests/unit/test_chart_render.py only.
THIRD_PARTY_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate", "Issuer"}


@pytest.mark.parametrize("values_name", VALUES_FILES)
def test_every_values_file_is_accepted_by_the_api_server(
    kube_api: client.ApiClient, custom_objects: client.CustomObjectsApi, namespace: str, values_name: str
) -> None:
    """Server-side dry run of every rendered object: admission, defaulting and validation of the real
    API server (CRD schemas included), nothing persisted."""
    docs = render(values_file(values_name), namespace, f"rel-{namespace[-8:]}")
    accepted = 0
    for doc in docs:
        if doc["kind"] in THIRD_PARTY_KINDS:
            continue
        if doc["apiVersion"].startswith("kopf.dev/"):
            group, version = doc["apiVersion"].split("/")
            if doc["kind"] == "ClusterKopfPeering":
                custom_objects.create_cluster_custom_object(group, version, "clusterkopfpeerings", doc, dry_run="All")
            else:
                custom_objects.create_namespaced_custom_object(
                    group, version, doc["metadata"]["namespace"], "kopfpeerings", doc, dry_run="All"
                )
        else:
            utils.create_from_dict(kube_api, doc, namespace=doc["metadata"].get("namespace"), dry_run="All")
        accepted += 1
    assert accepted == len([d for d in docs if d["kind"] not in THIRD_PARTY_KINDS]) > 10
