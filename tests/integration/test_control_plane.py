"""The harness proves itself on the real control plane: CRDs, admission, conflicts, RBAC, GC, Jobs, kopf.

Everything here talks to a real kube-apiserver + etcd + kube-controller-manager (no mocks); the
node helper stands in for the missing kubelet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import GROUP, VERSION, ServiceAccountClient
from tests.harness.kube import condition, get_table, read_or_none, wait_for, write_slice
from tests.harness.node import NodeHelper

pytestmark = pytest.mark.k8s


def _metadata(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelMetadata",
        "metadata": {"name": name},
        "spec": {"modelName": "Qwen/Qwen3-0.6B", "tensorParallelSize": 2, **spec},
    }


def _cache(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelCache",
        "metadata": {"name": name},
        "spec": {"source": "hf://Qwen/Qwen3-0.6B", **spec},
    }


def _create(objs: client.CustomObjectsApi, namespace: str, body: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    plural = "modelmetadatas" if body["kind"] == "ModelMetadata" else "modelcaches"
    result: dict[str, Any] = objs.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, field_validation="Strict" if strict else None
    )
    return result


def test_crds_are_established_and_structural(kube_api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    for name in ("modelmetadatas.modelexpress.io", "modelcaches.modelexpress.io"):
        crd = ext.read_custom_resource_definition(name)
        kinds = {c.type: c.status for c in crd.status.conditions}
        assert kinds.get("Established") == "True"
        assert kinds.get("NamesAccepted") == "True"
        assert "NonStructuralSchema" not in kinds
    assert crd.spec.names.short_names == ["mxcache"]


def test_defaults_applied_by_the_api_server(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    created = _create(custom_objects, namespace, _metadata("defaults"))
    assert created["spec"]["pipelineParallelSize"] == 1
    assert created["spec"]["revision"] == "main"
    assert created["spec"]["engine"] == "vllm"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (_metadata("tp0", tensorParallelSize=0), 422, "spec.tensorParallelSize"),
        (_metadata("bad-name", modelName="not a model name"), 422, "spec.modelName"),
        (_metadata("bad-dtype", dtype="fp64"), 422, "spec.dtype"),
        # strict field validation (kubectl's default) refuses unknown fields at decoding: 400, not 422
        (_metadata("unknown", tensorParalelSize=2), 400, 'unknown field "spec.tensorParalelSize"'),
        (_cache("bad-source", source="ftp://x/y"), 422, "spec.source"),
        (_cache("both", storage={"claimName": "pvc", "size": "10Gi"}), 422, "storage.claimName (use an existing PVC)"),
        (_cache("bad-size", storage={"size": "lots"}), 422, "spec.storage.size"),
        (_cache("negative-size", storage={"size": "-5Gi"}), 422, "storage.size must be a positive quantity"),
        (_cache("zero-size", storage={"size": "0"}), 422, "storage.size must be a positive quantity"),
        (_cache("zero-int-size", storage={"size": 0}), 422, "storage.size must be a positive quantity"),
    ],
    ids=[
        "tp0",
        "model-name",
        "dtype",
        "unknown-field",
        "source",
        "claim-and-size",
        "quantity",
        "negative-size",
        "zero-size",
        "zero-int-size",
    ],
)
def test_invalid_resources_are_rejected_naming_the_field(
    custom_objects: client.CustomObjectsApi, namespace: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    with pytest.raises(client.ApiException) as info:
        _create(custom_objects, namespace, body)
    assert info.value.status == status, info.value.body
    assert fragment in json.loads(info.value.body)["message"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (_cache("ftp", source="ftp://x/y"), "spec.source", "source must be hf://org/name, ngc://"),
        (_cache("spaced", source="hf://org/my model"), "spec.source", "without spaces"),
        (_cache("rev", revision="main branch"), "spec.revision", "revision must be a branch, tag or commit"),
        (
            _cache("threshold", eviction={"unusedThreshold": "a week"}),
            "spec.eviction.unusedThreshold",
            "eviction.unusedThreshold must be a duration such as 7d",
        ),
        (_cache("size-words", storage={"size": "lots"}), "spec.storage.size", "a positive quantity such as 200Gi"),
        (_metadata("name", modelName="not a model name"), "spec.modelName", "modelName must be a model name such as"),
        (_metadata("meta-rev", revision="v1 final"), "spec.revision", "revision must be a branch, tag or commit"),
    ],
    ids=["source-scheme", "source-space", "revision", "duration", "size", "model-name", "metadata-revision"],
)
def test_fields_users_get_wrong_are_refused_in_words_not_regexes(
    custom_objects: client.CustomObjectsApi, namespace: str, body: dict[str, Any], field: str, fragment: str
) -> None:
    """The CEL rules generated from the pydantic types answer with the field and the accepted forms."""
    with pytest.raises(client.ApiException) as info:
        _create(custom_objects, namespace, body)
    assert info.value.status == 422, info.value.body
    message = json.loads(info.value.body)["message"]
    assert field in message and fragment in message, message
    assert "should match" not in message and "^" not in message, message  # no raw regular expression


def test_a_slice_never_changes_the_model_it_belongs_to(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    """The operator repairs a slice by its `spec.modelMetadata`: the schema keeps it what it was made with."""
    name = write_slice(custom_objects, namespace, "model-a", "0123abcd", [])
    with pytest.raises(client.ApiException) as info:
        custom_objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelsourceslices", name, {"spec": {"modelMetadata": "model-b"}}
        )
    assert info.value.status == 422, info.value.body
    assert "spec.modelMetadata is immutable" in json.loads(info.value.body)["message"]


def test_stale_write_gets_409(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    created = _create(custom_objects, namespace, _metadata("conflict"))
    fresh = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "conflict")
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelmetadatas", "conflict", {"metadata": {"labels": {"touched": "yes"}}}
    )
    fresh["spec"]["pipelineParallelSize"] = 2
    with pytest.raises(client.ApiException) as info:
        custom_objects.replace_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "conflict", fresh)
    assert info.value.status == 409
    assert fresh["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    # status is a subresource: writes to it through the main resource are ignored
    current = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "conflict")
    current["status"] = {"phase": "Ready"}
    replaced = custom_objects.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelmetadatas", "conflict", current
    )
    assert "status" not in replaced or replaced["status"].get("phase") != "Ready"


def test_printer_columns_in_table_output(
    kube_api: client.ApiClient, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    _create(custom_objects, namespace, _metadata("table", pipelineParallelSize=2))
    custom_objects.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "modelmetadatas",
        "table",
        {"status": {"layout": "TP2xPP2", "readySources": 3, "readyReplicas": 0, "phase": "Pending"}},
    )
    table = get_table(kube_api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/modelmetadatas")
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:6] == ["Name", "Model", "Layout", "Ready-Sources", "Replicas", "Phase"]
    cells = table["rows"][0]["cells"]
    assert cells[:6] == ["table", "Qwen/Qwen3-0.6B", "TP2xPP2", 3, 0, "Pending"]


def test_kubectl_wait_for_ready_condition(
    control_plane: ControlPlane, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    """`kubectl wait --for=condition=Ready` works on both kinds (kubectl is optional; the check is the same)."""
    _create(custom_objects, namespace, _metadata("waitable"))
    _create(custom_objects, namespace, _cache("waitable"))
    ready = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Tested",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    }
    for plural in ("modelmetadatas", "modelcaches"):
        custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, "waitable", {"status": ready}
        )
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, "waitable")
        assert (condition(obj, "Ready") or {}).get("status") == "True"
    kubectl = shutil.which("kubectl")
    if kubectl:
        for kind in ("modelmetadata", "modelcache"):
            out = subprocess.run(
                [
                    kubectl,
                    "--kubeconfig",
                    str(control_plane.kubeconfig),
                    "-n",
                    namespace,
                    "wait",
                    "--for=condition=Ready",
                    f"{kind}/waitable",
                    "--timeout=20s",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert out.returncode == 0, out.stderr
            assert "condition met" in out.stdout
        listing = subprocess.run(
            [kubectl, "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "get", "modelmetadatas"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        assert listing[0].split() == ["NAME", "MODEL", "LAYOUT", "READY-SOURCES", "REPLICAS", "PHASE", "VERSION", "AGE"]
        assert listing[1].split()[:2] == ["waitable", "Qwen/Qwen3-0.6B"]


def test_read_only_service_account_is_refused_writes(
    custom_objects: client.CustomObjectsApi, namespace: str, service_account_client: ServiceAccountClient
) -> None:
    _create(custom_objects, namespace, _metadata("rbac"))
    reader_rules = [{"apiGroups": [GROUP], "resources": ["modelmetadatas"], "verbs": ["get", "list", "watch"]}]
    reader, _ = service_account_client(namespace, "mx-reader", reader_rules)
    reader_objs = client.CustomObjectsApi(reader)
    items = reader_objs.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas")["items"]
    assert [i["metadata"]["name"] for i in items] == ["rbac"]
    for attempt in (
        lambda: reader_objs.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "rbac"),
        lambda: reader_objs.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "modelmetadatas", "rbac", {"status": {"phase": "Ready"}}
        ),
        lambda: reader_objs.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelmetadatas", _metadata("sneaky")
        ),
        lambda: reader_objs.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches"),
    ):
        with pytest.raises(client.ApiException) as info:
            attempt()
        assert info.value.status == 403
    nobody, _ = service_account_client(namespace, "mx-nobody")
    with pytest.raises(client.ApiException) as info:
        client.CustomObjectsApi(nobody).list_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas")
    assert info.value.status == 403


def test_owner_references_garbage_collect(
    kube_api: client.ApiClient, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    owner = _create(custom_objects, namespace, _cache("owner"))
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "ModelCache",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "data": {"k": "v"},
        },
    )
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", "owner")

    wait_for(
        lambda: read_or_none(core.read_namespaced_config_map, "owned", namespace) is None,
        30,
        what="garbage collection of the owned ConfigMap",
    )


def _job(name: str, command: list[str], **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "modelexpress-worker:dev",
                            "command": command,
                            **pod_spec.pop("container", {}),
                        }
                    ],
                    **pod_spec,
                }
            },
        },
    }


def _job_condition(batch: client.BatchV1Api, namespace: str, name: str, type_: str) -> bool:
    job = batch.read_namespaced_job_status(name, namespace)
    return any(c.type == type_ and c.status == "True" for c in job.status.conditions or [])


def test_job_pod_played_by_the_node_completes_the_job(
    kube_api: client.ApiClient, namespace: str, node: NodeHelper
) -> None:
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"HF_TOKEN": "hf_from_secret"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "mx-config"}, "data": {"model-express.yaml": "server:\n  port: 9100\n"}}
    )
    script = (
        "import os, pathlib, sys;"
        "assert os.environ['HF_TOKEN'] == 'hf_from_secret', 'secret env';"
        "assert os.environ['POD'] == os.environ['HOSTNAME'], 'fieldRef';"
        "pathlib.Path(os.environ['OUT']).joinpath('done').write_text('ok');"
        "print('job ran in', os.environ['POD_NS'])"
    )
    body = _job(
        "runs-locally",
        [sys.executable, "-c", script],
        container={
            "env": [
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "HF_TOKEN"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "OUT", "value": "/cache"},
            ],
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        },
        volumes=[{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}}],
    )
    batch.create_namespaced_job(namespace, body)
    result = node.run_job_pod(namespace, "runs-locally")
    assert result.exit_code == 0, result.stderr
    assert f"job ran in {namespace}" in result.stdout
    assert (node.claim_dir(namespace, "model-cache") / "done").read_text() == "ok"
    wait_for(lambda: _job_condition(batch, namespace, "runs-locally", "Complete"), 30, what="Job Complete")
    pod = node.job_pods(namespace, "runs-locally")[0]
    assert pod.spec.node_name == node.name
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0

    # the worker image's CLI runs as the container command, reading a mounted ConfigMap
    batch.create_namespaced_job(
        namespace,
        _job(
            "cli-validate",
            ["modelexpress", "config", "validate", "/etc/modelexpress/model-express.yaml"],
            container={"volumeMounts": [{"name": "config", "mountPath": "/etc/modelexpress"}]},
            volumes=[{"name": "config", "configMap": {"name": "mx-config"}}],
        ),
    )
    cli = node.run_job_pod(namespace, "cli-validate")
    assert cli.exit_code == 0, cli.stderr
    wait_for(lambda: _job_condition(batch, namespace, "cli-validate", "Complete"), 30, what="Job Complete")


def test_failing_job_pod_fails_the_job(kube_api: client.ApiClient, namespace: str, node: NodeHelper) -> None:
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(namespace, _job("fails", [sys.executable, "-c", "import sys; sys.exit(3)"]))
    result = node.run_job_pod(namespace, "fails")
    assert result.exit_code == 3
    wait_for(lambda: _job_condition(batch, namespace, "fails", "Failed"), 30, what="Job Failed")
    pod = node.job_pods(namespace, "fails")[0]
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_pod_runs_with_its_service_account_identity(
    kube_api: client.ApiClient, namespace: str, node: NodeHelper, service_account_client: ServiceAccountClient
) -> None:
    """Code in a pod reaches the API server as the pod's ServiceAccount, with exactly its RBAC."""
    service_account_client(namespace, "reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}])
    script = (
        "from kubernetes import client, config; import os;"
        "config.load_kube_config(); api = client.CoreV1Api(); ns = os.environ['POD_NAMESPACE'];"
        "print(len(api.list_namespaced_config_map(ns).items));"
        "api.create_namespaced_config_map(ns, {'metadata': {'name': 'x'}})"
    )
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "identity"},
            "spec": {
                "serviceAccountName": "reader",
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "x", "command": [sys.executable, "-c", script]}],
            },
        },
    )
    result = node.run_pod(namespace, "identity")
    assert result.exit_code == 1
    assert "403" in result.stderr and "Forbidden" in result.stderr
    assert result.stdout.strip().isdigit()
    assert core.read_namespaced_pod("identity", namespace).status.phase == "Failed"


def test_pod_lifecycle_conditions_and_ip(kube_api: client.ApiClient, namespace: str, node: NodeHelper) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "server"},
            "spec": {"containers": [{"name": "main", "image": "x", "command": ["sleep"]}]},
        },
    )
    ip = node.mark_running(namespace, "server", ip="127.0.0.1")
    pod = core.read_namespaced_pod("server", namespace)
    assert (pod.spec.node_name, pod.status.phase, pod.status.pod_ip, ip) == (
        node.name,
        "Running",
        "127.0.0.1",
        "127.0.0.1",
    )
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    node.mark_not_ready(namespace, "server")
    pod = core.read_namespaced_pod("server", namespace)
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "False"
    assert pod.status.phase == "Running"


def test_kopf_operator_handles_create_and_patches_status(
    operator_in_process: Any, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    _create(custom_objects, namespace, _metadata("llama", pipelineParallelSize=2))
    _create(custom_objects, namespace, _cache("llama", storage={"size": "1Gi"}))

    def metadata_status() -> dict[str, Any] | None:
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "llama")
        status: dict[str, Any] | None = obj.get("status")
        return status if status and status.get("observedGeneration") == 1 else None

    status = wait_for(metadata_status, 30, what="ModelMetadata status from the operator")
    assert status["layout"] == "TP2xPP2"
    assert status["phase"] == "Pending"
    assert status["readyReplicas"] == 0
    ready = condition({"status": status}, "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "NoReadyInstance"
    assert "all 4 rank(s)" in ready["message"]

    def cache_status() -> dict[str, Any] | None:
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", "llama")
        return obj.get("status") if (obj.get("status") or {}).get("observedGeneration") == 1 else None

    cache = wait_for(cache_status, 30, what="ModelCache status from the operator")
    assert cache["phase"] == "Pending" and cache["claimName"] == "llama-cache" and cache["jobName"] == "llama-dl-g1-1"
    assert (condition({"status": cache}, "Ready") or {}).get("reason") == "Downloading"

    # level-triggered on spec changes: a new generation is observed and the layout follows
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelmetadatas", "llama", {"spec": {"tensorParallelSize": 4}}
    )

    def regenerated() -> dict[str, Any] | None:
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "llama")
        st = obj.get("status") or {}
        return st if st.get("observedGeneration") == 2 else None

    assert wait_for(regenerated, 30, what="generation 2 observed")["layout"] == "TP4xPP2"
    annotations = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "llama")[
        "metadata"
    ]["annotations"]
    assert any(key.startswith("modelexpress.io/") for key in annotations), annotations
