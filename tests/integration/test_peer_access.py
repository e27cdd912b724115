"""Who may read a source: pod-bound ServiceAccount tokens checked by the source (MX_PEER_AUTH=kubernetes).

A real control plane. The source is a real SourceWorker (NIXL on host memory, gRPC) whose API
client is the workers' ServiceAccount with exactly WORKER_PEER_AUTH_RULES (`tokenreviews create`
cluster-wide, `pods get` in the namespace). Targets
present TokenRequest tokens bound to their pods (audience `modelexpress`, as the projected volume
gives them): an opted-in pod of the namespace pulls every byte, and serves it back to the source's
own pod; a pod of another namespace, a pod
that is not opted in, a token whose pod was deleted, a forged token and no token are each refused
with the reason, and no refused caller ever receives the source's NIXL agent metadata.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from kubernetes import client
from prometheus_client import REGISTRY

from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.client import SourceUnavailableError, WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import NoSourceError, PullOptions, pull
from modelexpress.p2p.source import SourceWorker
from modelexpress_operator.rbac import WORKER_PEER_AUTH_RULES
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import recorded_sources, service_account_token, wait_for, write_kubeconfig

pytestmark = pytest.mark.k8s
IDENTITY = WorkerIdentity(model_name="test/guarded")
SPECS = [TensorSpec(f"w{i}", "float32", (256, 64)) for i in range(4)]
OPTED_IN = {"modelexpress.io/p2p": "enabled"}
CLUSTER_SCOPED = {"tokenreviews"}


def _pod(core: client.CoreV1Api, namespace: str, name: str, annotations: dict[str, str] | None = None) -> str:
    body = {"metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"serviceAccountName": "mx-worker", "containers": [{"name": "vllm", "image": "vllm"}]}}  # fmt: skip
    uid: str = core.create_namespaced_pod(namespace, body).metadata.uid
    return uid


def _token(core: client.CoreV1Api, namespace: str, pod: str, uid: str, path: Path) -> Path:
    """A token bound to the pod, as the webhook's projected volume holds it."""
    request = {"spec": {"audiences": ["modelexpress"], "expirationSeconds": 600,
                        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}}}  # fmt: skip
    reply = core.create_namespaced_service_account_token("mx-worker", namespace, request)
    path.write_text(reply.status.token)
    return path


def _account(core: client.CoreV1Api, namespace: str, name: str) -> None:
    with contextlib.suppress(client.ApiException):
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})


@pytest.fixture
def guarded_source(
    control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[SourceWorker, dict[str, torch.Tensor]]]:  # fmt: skip
    """A source with MX_PEER_AUTH=kubernetes, its API client the workers' ServiceAccount, least privilege."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    _account(client.CoreV1Api(kube_api), namespace, "mx-worker")
    cluster_role = f"mx-worker-peer-{namespace}"
    cluster = [r for r in WORKER_PEER_AUTH_RULES if set(r["resources"]) <= CLUSTER_SCOPED]
    namespaced = [r for r in WORKER_PEER_AUTH_RULES if not set(r["resources"]) <= CLUSTER_SCOPED]
    rbac.create_cluster_role({"metadata": {"name": cluster_role}, "rules": cluster})
    rbac.create_cluster_role_binding({
        "metadata": {"name": cluster_role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": "mx-worker", "namespace": namespace}],
    })  # fmt: skip
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "mx-worker-peer"}, "rules": namespaced})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "mx-worker-peer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mx-worker-peer"},
        "subjects": [{"kind": "ServiceAccount", "name": "mx-worker", "namespace": namespace}],
    })  # fmt: skip
    token = service_account_token(kube_api, namespace, "mx-worker")
    kubeconfig = write_kubeconfig(
        tmp_path / "source.kubeconfig", control_plane.server, token, control_plane.ca_file, "src"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    layout = allocate_pool(SPECS)
    for i, tensor in enumerate(layout.tensors.values()):
        tensor.copy_(torch.arange(math.prod(tensor.shape), dtype=torch.float32).reshape(tensor.shape) + i)
    uid = _pod(client.CoreV1Api(kube_api), namespace, "src", OPTED_IN)  # the source's own pod
    settings = WorkerSettings(
        peer_auth="kubernetes", pod_namespace=namespace, worker_host="127.0.0.1", pod_name="src", pod_uid=uid,
        peer_trusted_users=[f"system:serviceaccount:{namespace}:modelexpress-operator"],
    )  # fmt: skip
    source = SourceWorker(IDENTITY, layout, settings)
    source.start()
    try:
        yield source, {k: v.clone() for k, v in layout.tensors.items()}
    finally:
        source.stop()
        with contextlib.suppress(client.ApiException):
            rbac.delete_cluster_role_binding(cluster_role)
            rbac.delete_cluster_role(cluster_role)


def _refusal(endpoint: str, token: Path | None) -> str:
    client_ = WorkerClient(endpoint, timeout=10, token_file=str(token) if token else "/nonexistent/token")
    try:
        with pytest.raises(SourceUnavailableError) as refused:
            client_.manifest()
        return str(refused.value)
    finally:
        client_.close()


def _pull_back(
    namespace: str, served: Any, engine: NixlEngine, token: Path, original: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A second guarded source serving `served`; the holder of `token` pulls every byte from it."""
    settings = WorkerSettings(peer_auth="kubernetes", pod_namespace=namespace, worker_host="127.0.0.1")
    second = SourceWorker(IDENTITY, served, settings, engine)
    second.start()
    back_engine = NixlEngine()
    try:
        monkeypatch.setenv("MX_PEER_TOKEN_FILE", str(token))
        back = allocate_pool(SPECS)
        back_engine.register(back)
        result = pull(back, IDENTITY, [second.endpoint], back_engine, PullOptions(connect_timeout=10))
        assert result.sources == [second.endpoint]
        assert all(torch.equal(back.tensors[name], tensor) for name, tensor in original.items())
    finally:
        back_engine.deregister_all()
        second.stop()


def test_only_opted_in_pods_of_the_namespace_read_a_guarded_source(
    kube_api: client.ApiClient, namespace: str, guarded_source: tuple[SourceWorker, dict[str, Any]],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    source, original = guarded_source
    core = client.CoreV1Api(kube_api)
    _account(core, namespace, "mx-worker")
    other = f"{namespace}-other"
    core.create_namespace({"metadata": {"name": other}})
    wait_for(lambda: core.list_namespaced_service_account(other).items, 30, what="default ServiceAccount")
    _account(core, other, "mx-worker")
    tokens = {
        "allowed": _token(core, namespace, "target", _pod(core, namespace, "target", OPTED_IN), tmp_path / "a"),
        "plain": _token(core, namespace, "plain", _pod(core, namespace, "plain"), tmp_path / "p"),
        "far": _token(core, other, "far", _pod(core, other, "far", OPTED_IN), tmp_path / "f"),
        "gone": _token(core, namespace, "gone", _pod(core, namespace, "gone", OPTED_IN), tmp_path / "g"),
    }
    core.delete_namespaced_pod("gone", namespace, grace_period_seconds=0)
    wait_for(lambda: not [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name == "gone"], 30,
             what="pod gone")  # fmt: skip
    forged = tmp_path / "forged"
    forged.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.c2lnbmF0dXJl")

    # Refused, each with its reason; none of them is ever given the agent metadata.
    assert "UNAUTHENTICATED" in (why := _refusal(source.endpoint, None)) and "no ServiceAccount token" in why
    assert "not accepted by the API server" in _refusal(source.endpoint, forged)
    assert "not accepted by the API server" in _refusal(source.endpoint, tokens["gone"])
    assert "PERMISSION_DENIED" in (why := _refusal(source.endpoint, tokens["plain"])) and "not opted in" in why
    assert f"pods of namespace {other} may not read" in _refusal(source.endpoint, tokens["far"])
    # Allowed by MX_PEER_NAMESPACES, but the source's own RBAC does not reach that namespace: one line
    # that says which grant is missing (the source's fix, not the caller's).
    widened = SourceWorker(
        IDENTITY, allocate_pool(SPECS), source.settings.model_copy(update={"peer_namespaces": [other]})
    )
    widened.start()
    try:
        why = _refusal(widened.endpoint, tokens["far"])
        assert f"this source may not read pods in namespace {other}" in why and "MX_PEER_NAMESPACES" in why, why
    finally:
        widened.stop()
    monkeypatch.setenv("MX_PEER_TOKEN_FILE", str(tokens["far"]))
    engine = NixlEngine()
    try:
        target = allocate_pool(SPECS)
        engine.register(target)
        with pytest.raises(NoSourceError, match="may not read this model"):
            pull(target, IDENTITY, [source.endpoint], engine, PullOptions(connect_timeout=10))
        assert source.server.last_metadata_request == float("-inf")  # no NIXL metadata left the source

        # The opted-in pod of the namespace: every byte, verified.
        monkeypatch.setenv("MX_PEER_TOKEN_FILE", str(tokens["allowed"]))
        result = pull(target, IDENTITY, [source.endpoint], engine, PullOptions(connect_timeout=10))
        assert result.sources == [source.endpoint] and not result.fell_back
        assert all(torch.equal(target.tensors[name], tensor) for name, tensor in original.items())

        # And back: the target serves what it pulled (guarded too), the source's own pod pulls from it.
        mine = _token(core, namespace, "source", _pod(core, namespace, "source", OPTED_IN), tmp_path / "s")
        _pull_back(namespace, target, engine, mine, original, monkeypatch)
    finally:
        engine.deregister_all()
        core.delete_namespace(other)
    # The refusals are counted by status code on the source's metrics; no token reaches a log line.
    assert (REGISTRY.get_sample_value("modelexpress_peer_refusals_total", {"code": "permission_denied"}) or 0) >= 3
    assert (REGISTRY.get_sample_value("modelexpress_peer_refusals_total", {"code": "unauthenticated"}) or 0) >= 3
    assert "refused GetManifest: pod" in caplog.text
    for path in [*tokens.values(), forged]:
        secret = path.read_text()
        assert secret not in caplog.text and secret[-20:] not in caplog.text


def test_the_operator_follows_a_guarded_worker_with_its_own_token(
    kube_api: client.ApiClient, custom_objects: client.CustomObjectsApi, namespace: str, node: Any,
    guarded_source: tuple[SourceWorker, dict[str, Any]], operator_kubeconfig: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The operator dials every worker's status stream: a guarded worker admits it by its user name
    (MX_PEER_TRUSTED_USERS) and it is recorded Ready as any other."""
    from kopf.testing import KopfRunner

    source, _ = guarded_source
    core = client.CoreV1Api(kube_api)
    port = source.endpoint.rsplit(":", 1)[1]
    core.patch_namespaced_pod("src", namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": port}}})
    node.mark_running(namespace, "src", ip="127.0.0.1")
    reply = core.create_namespaced_service_account_token(
        "modelexpress-operator", namespace, {"spec": {"audiences": ["modelexpress"], "expirationSeconds": 600}}
    )
    (tmp_path / "operator-token").write_text(reply.status.token)
    monkeypatch.setenv("MX_OPERATOR_PEER_TOKEN_FILE", str(tmp_path / "operator-token"))
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    name = IDENTITY.resource_name()

    def recorded() -> list[dict[str, Any]] | None:
        sources = recorded_sources(custom_objects, namespace, name)
        return sources if sources and sources[0]["state"] == "Ready" else None

    args = ["run", "--standalone", "--namespace", namespace, "-m", "modelexpress_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        (entry,) = wait_for(recorded, 30, what="the guarded worker recorded Ready")
        assert entry["pod"] == "src" and entry["endpoint"] == source.endpoint
    assert runner.exception is None, runner.exception
