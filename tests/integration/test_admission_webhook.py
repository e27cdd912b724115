"""The admission webhook for real: the API server calls the operator's kopf webhook server on 127.0.0.1
over TLS, through a MutatingWebhookConfiguration shaped like the chart's; pods are created through
the API. The operator runs as its own ServiceAccount with exactly OPERATOR_RULES: it creates its CA
and serving certificate in a Secret and writes the CA into the configuration's caBundle itself."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelexpress_operator.rbac import WEBHOOK_CONFIG, WEBHOOK_SECRET
from modelexpress_operator.webhook.mutation import CACHE_MOUNT, VOLUME
from tests.harness.fixtures import GROUP, VERSION
from tests.harness.kube import wait_for
from tests.harness.processes import free_port

pytestmark = pytest.mark.k8s


def webhook_configuration(namespace: str, port: int) -> dict[str, Any]:
    """As the chart ships it, but with a URL instead of the Service (the operator runs here)."""
    return {
        "metadata": {"name": WEBHOOK_CONFIG},
        "webhooks": [
            {
                "name": "inject.modelexpress.io",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/inject-modelexpress"},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
                "reinvocationPolicy": "IfNeeded",
            }
        ],
    }  # fmt: skip


@pytest.fixture
def webhook_port(kube_api: client.ApiClient, namespace: str) -> Iterator[int]:
    port = free_port()
    admission = client.AdmissionregistrationV1Api(kube_api)
    admission.create_mutating_webhook_configuration(webhook_configuration(namespace, port))
    yield port
    admission.delete_mutating_webhook_configuration(WEBHOOK_CONFIG)


def _pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "containers": [
                {"name": "vllm", "image": "vllm/vllm-openai:v0.11.0", "env": [{"name": "MX_WORKER_GRPC_PORT", "value": "6000"}]},
                {"name": "sidecar", "image": "busybox"},
            ]
        },
    }  # fmt: skip


def _env(container: client.V1Container) -> dict[str, Any]:
    return {e.name: e.value if e.value_from is None else e.value_from.field_ref.field_path for e in container.env or []}


def _pods_near_their_model_get_a_preferred_affinity(
    core: client.CoreV1Api, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    """`prefer-model-nodes`: a preferred (not required) affinity to the nodes holding the model."""
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelmetadatas",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelMetadata", "metadata": {"name": "llama-meta"},
         "spec": {"modelName": "org/llama"}},
    )  # fmt: skip

    def reconciled() -> bool:
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", "llama-meta")
        return (obj.get("status") or {}).get("observedGeneration") == 1

    wait_for(reconciled, 30, what="the operator's first status")  # then it has no source to write about
    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "modelmetadatas", "llama-meta", {"status": {"nodes": ["gpu-b", "gpu-a"]}}
    )
    near = core.create_namespaced_pod(
        namespace,
        _pod("near", {"modelexpress.io/p2p": "enabled", "modelexpress.io/prefer-model-nodes": "llama-meta"}),
    )
    (term,) = near.spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution
    assert near.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution is None
    (expression,) = term.preference.match_expressions
    assert (expression.key, expression.operator, expression.values) == ("kubernetes.io/hostname", "In",
                                                                         ["gpu-a", "gpu-b"])  # fmt: skip
    nowhere = core.create_namespaced_pod(
        namespace,
        _pod("nowhere", {"modelexpress.io/p2p": "enabled", "modelexpress.io/prefer-model-nodes": "absent"}),
    )
    assert nowhere.spec.affinity is None  # no such ModelMetadata yet: admitted without a preference


def _guarded_worker(pod: client.V1Pod, namespace: str) -> None:
    """The settings of a worker whose callers are checked (peer authentication) and whose WorkerService
    speaks TLS, as the webhook injected them."""
    vllm = pod.spec.containers[0]
    env = _env(vllm)
    # Peer authentication: the worker checks its callers, admits the operator, and holds a token of its own.
    assert env["MX_PEER_AUTH"] == "kubernetes"
    assert pod.metadata.labels["modelexpress.io/p2p"] == "enabled"  # what the chart's NetworkPolicy selects
    assert env["MX_PEER_TRUSTED_USERS"] == f"system:serviceaccount:{namespace}:modelexpress-operator"
    token = next(v for v in pod.spec.volumes if v.name == "modelexpress-peer-token").projected.sources[0]
    assert (token.service_account_token.audience, token.service_account_token.path) == ("modelexpress", "token")
    assert ("modelexpress-peer-token", "/var/run/secrets/modelexpress", True) in [
        (m.name, m.mount_path, m.read_only) for m in vllm.volume_mounts
    ]
    # TLS on the WorkerService: the workers' Secret in the engine container, and where to find each file.
    tls = next(v for v in pod.spec.volumes if v.name == "modelexpress-worker-tls")
    assert tls.secret.secret_name == "modelexpress-worker-tls"
    assert env["MX_WORKER_TLS_CERT_FILE"] == "/var/run/secrets/modelexpress-worker-tls/tls.crt"
    assert env["MX_WORKER_TLS_CA_FILE"] == "/var/run/secrets/modelexpress-worker-tls/ca.crt"
    assert ("modelexpress-worker-tls", "/var/run/secrets/modelexpress-worker-tls", True) in [
        (m.name, m.mount_path, m.read_only) for m in vllm.volume_mounts
    ]


def test_webhook_injects_refuses_and_fails_open(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    webhook_port: int,
    operator_kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kopf.testing import KopfRunner

    core = client.CoreV1Api(kube_api)
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelcaches",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelCache", "metadata": {"name": "llama"},
         "spec": {"source": "hf://org/llama", "storage": {"claimName": "models"}}},
    )  # fmt: skip
    for key, value in {
        "MX_OPERATOR_WEBHOOK_ENABLED": "true",
        "MX_OPERATOR_WEBHOOK_PORT": str(webhook_port),
        "MX_OPERATOR_WEBHOOK_BIND": "127.0.0.1",
        "MX_OPERATOR_WEBHOOK_EXTRA_SANS": json.dumps(["127.0.0.1"]),
        "MX_OPERATOR_NAMESPACE": namespace,
        "MX_OPERATOR_SERVER_URL": "modelexpress-server.mx-system.svc:8001",
        "MX_OPERATOR_PEER_AUTH": "true",
        "MX_OPERATOR_WORKER_TLS_SECRET": "modelexpress-worker-tls",
        "KUBECONFIG": str(operator_kubeconfig),
    }.items():
        monkeypatch.setenv(key, value)
    args = ["run", "--standalone", "--namespace", namespace, "-m", "modelexpress_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        # The operator issued its certificate into the Secret and put its CA into the caBundle.
        admission = client.AdmissionregistrationV1Api(kube_api)

        def ca_bundle() -> str | None:
            bundle = admission.read_mutating_webhook_configuration(WEBHOOK_CONFIG).webhooks[0].client_config.ca_bundle
            return str(bundle) if bundle else None

        bundle = wait_for(ca_bundle, 30, what="caBundle")
        secret = core.read_namespaced_secret(WEBHOOK_SECRET, namespace)
        assert base64.b64decode(bundle) == base64.b64decode(secret.data["ca.crt"])
        # Owned by the configuration Helm installs, so `helm uninstall` takes the Secret too.
        (owner,) = secret.metadata.owner_references
        assert (owner.kind, owner.name) == ("MutatingWebhookConfiguration", WEBHOOK_CONFIG)
        wait_for(lambda: _listening(webhook_port), 30, what="webhook server")

        # An opted-in pod naming a ModelCache: env, read-only mount and port in its first container.
        pod = core.create_namespaced_pod(
            namespace,
            _pod("worker", {"modelexpress.io/p2p": "enabled", "modelexpress.io/model-cache": "llama",
                            "modelexpress.io/ranks-per-pod": "2"}),
        )  # fmt: skip
        vllm, sidecar = pod.spec.containers
        env = _env(vllm)
        assert env["VLLM_PLUGINS"] == "modelexpress"
        assert env["MODEL_EXPRESS_URL"] == "modelexpress-server.mx-system.svc:8001"
        assert env["MX_METADATA_BACKEND"] == "kubernetes" and env["HF_HUB_CACHE"] == CACHE_MOUNT
        assert env["MX_POD_UID"] == "metadata.uid" and env["MX_NODE_NAME"] == "spec.nodeName"
        assert env["MX_WORKER_GRPC_PORT"] == "6000"  # the pod's own value wins
        assert [(p.name, p.container_port) for p in vllm.ports] == [("mx-worker", 50051), ("mx-worker-1", 50052)]
        assert [(m.name, m.mount_path, m.read_only) for m in vllm.volume_mounts if m.name == VOLUME] == [
            (VOLUME, CACHE_MOUNT, True)
        ]
        volume = next(v for v in pod.spec.volumes if v.name == VOLUME)
        assert volume.persistent_volume_claim.claim_name == "models" and volume.persistent_volume_claim.read_only
        assert not sidecar.env and all(m.name != VOLUME for m in sidecar.volume_mounts or [])

        assert env["MX_ZONE"] == "metadata.labels['topology.kubernetes.io/zone']"
        _guarded_worker(pod, namespace)
        assert pod.spec.affinity is None  # no node preference unless asked for

        _pods_near_their_model_get_a_preferred_affinity(core, custom_objects, namespace)

        # Not opted in: untouched.
        plain = core.create_namespaced_pod(namespace, _pod("plain"))
        assert _env(plain.spec.containers[0]) == {"MX_WORKER_GRPC_PORT": "6000"} and not plain.spec.containers[0].ports

        # Naming a ModelCache that does not exist: refused with the reason, nothing created.
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(
                namespace, _pod("orphan", {"modelexpress.io/p2p": "enabled", "modelexpress.io/model-cache": "nope"})
            )
        assert refused.value.status == 400
        assert "ModelCache 'nope' does not exist" in json.loads(refused.value.body)["message"]
        with pytest.raises(client.ApiException) as bad_port:
            core.create_namespaced_pod(
                namespace, _pod("badport", {"modelexpress.io/p2p": "enabled", "modelexpress.io/worker-port": "x"})
            )
        assert "modelexpress.io/worker-port" in json.loads(bad_port.value.body)["message"]
    assert runner.exception is None, runner.exception

    # The operator is down: failurePolicy Ignore admits the pod as it is, within the webhook timeout.
    started = time.monotonic()
    down = core.create_namespaced_pod(namespace, _pod("while-down", {"modelexpress.io/p2p": "enabled"}))
    assert time.monotonic() - started < 10
    assert "VLLM_PLUGINS" not in _env(down.spec.containers[0])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
