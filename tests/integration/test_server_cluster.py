"""The server in cluster mode on the real control plane: *ensure* rides on a ModelCache.

The operator runs in-process as its own ServiceAccount; the server is a `modelexpress server --mode
cluster` process authenticated as a ServiceAccount bound to exactly `SERVER_RULES` (+ TokenReview);
the node helper runs the ModelCache's download Job pod, whose PVC is a local directory the server
also reads as its mounted cache claim. Downloads come from the local Hugging Face Hub server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc
from modelexpress.cache.sources import parse_source
from modelexpress.server.cluster import cache_name
from modelexpress_operator.rbac import SERVER_RULES, SERVER_TOKEN_REVIEW_RULES
from tests.harness.fixtures import GROUP, VERSION, ServiceAccountClient
from tests.harness.kube import read_or_none, service_account_token, wait_for
from tests.harness.node import NodeHelper
from tests.harness.processes import die_with_parent
from tests.helpers.fake_hub import FakeHub
from tests.integration.test_modelcache_operator import cache_operator, hub  # noqa: F401 - fixtures

pytestmark = pytest.mark.k8s
ROOT = Path(__file__).resolve().parents[2]
BIG = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(6 << 20)}


@pytest.fixture
def cluster_server(
    namespace: str,
    node: NodeHelper,
    kube_api: client.ApiClient,
    service_account_client: ServiceAccountClient,
    tmp_path: Path,
) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {"metadata": {"name": "shared-cache"},
         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}},
    )  # fmt: skip
    _, kubeconfig = service_account_client(namespace, "mx-server", SERVER_RULES)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    role = f"mx-server-review-{namespace}"
    rbac.create_cluster_role({"metadata": {"name": role}, "rules": SERVER_TOKEN_REVIEW_RULES})
    rbac.create_cluster_role_binding(
        {"metadata": {"name": role},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": "mx-server", "namespace": namespace}]}
    )  # fmt: skip
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MX_SERVER_MODE": "cluster",
        "MX_SERVER_NAMESPACE": namespace,
        "MX_SERVER_CACHE_CLAIM": "shared-cache",
        "MX_SERVER_CACHE_MOUNT": str(node.claim_dir(namespace, "shared-cache")),
        "MX_SERVER_REQUIRE_TOKEN": "true",
        "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / "server.db"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelexpress.cli.main", "server", "--host", "127.0.0.1", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent,  # noqa: PLW1509
    )  # fmt: skip
    assert proc.stdout is not None
    endpoint = None
    lines = []
    while endpoint is None:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "listening on" in line:
            endpoint = line.rsplit(" ", 1)[1].strip()
    yield endpoint
    proc.terminate()
    assert proc.wait(60) == 0
    rbac.delete_cluster_role_binding(role)
    rbac.delete_cluster_role(role)


def test_ensure_creates_one_modelcache_reports_progress_and_streams_from_the_claim(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    hub: FakeHub,  # noqa: F811
    cache_operator: Any,  # noqa: F811
    cluster_server: str,
    tmp_path: Path,
) -> None:
    hub.add("org/big", BIG)
    hub.state.seconds_per_mib = 0.5  # a slow link: the Job's progress shows on the status meanwhile
    token = service_account_token(kube_api, namespace, "mx-client")
    auth = [("authorization", f"Bearer {token}")]
    request = server_pb2.ModelDownloadRequest(model_name="hf://org/big", revision="main")
    with grpc.insecure_channel(cluster_server) as channel:
        stub = server_pb2_grpc.ModelServiceStub(channel)
        # Without a token, and with a forged one, ensure is refused before anything is created.
        for metadata in (None, [("authorization", "Bearer not-a-token")]):
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.EnsureModelDownloaded(request, metadata=metadata, timeout=30))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches")["items"] == []

        # Three clients at once: one ModelCache, one Job, every client sees it through.
        results: list[list[server_pb2.ModelStatusUpdate]] = []
        clients = [
            threading.Thread(target=lambda: results.append(list(stub.EnsureModelDownloaded(request, metadata=auth, timeout=180))))
            for _ in range(3)
        ]  # fmt: skip
        for thread in clients:
            thread.start()
        name = cache_name(parse_source("hf://org/big"), "main")
        job = f"{name}-dl-g1-1"
        batch = client.BatchV1Api(kube_api)
        wait_for(lambda: read_or_none(batch.read_namespaced_job, job, namespace), 60, what="download Job")
        run = node.run_job_pod(namespace, job, timeout=120)
        assert run.exit_code == 0, run.stderr[-2000:]
        for thread in clients:
            thread.join(120)
        assert len(results) == 3
        caches = custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches")["items"]
        assert [c["metadata"]["name"] for c in caches] == [name]
        assert caches[0]["spec"]["storage"]["claimName"] == "shared-cache"
        assert caches[0]["metadata"]["labels"] == {"modelexpress.io/created-by": "modelexpress-server"}
        commit = hub.state.repos["org/big"].commit
        total = sum(len(v) for v in BIG.values())
        for updates in results:
            assert updates[0].status == server_pb2.MODEL_STATUS_QUEUED
            assert updates[-1].status == server_pb2.MODEL_STATUS_DOWNLOADED, updates[-1]
            assert updates[-1].resolved_revision == commit
        progress = [u for u in results[0] if u.status == server_pb2.MODEL_STATUS_DOWNLOADING]
        assert progress and all(u.bytes_total == total for u in progress)
        assert any(0 < u.bytes_done < total for u in progress), [u.bytes_done for u in progress]

        _list_and_stream_from_the_claim(stub, commit, total)

        # A second ensure of a Ready model answers at once from the ModelCache.
        started = time.monotonic()
        again = list(stub.EnsureModelDownloaded(request, metadata=auth, timeout=30))
        assert again[-1].status == server_pb2.MODEL_STATUS_DOWNLOADED and time.monotonic() - started < 10

        _cli_download_with_and_without_token(cluster_server, token, tmp_path, commit)

        # Delete needs the token too, then deletes the ModelCache.
        with pytest.raises(grpc.RpcError) as refused:
            stub.DeleteModel(server_pb2.DeleteModelRequest(model_name="org/big"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        deleted = stub.DeleteModel(server_pb2.DeleteModelRequest(model_name="org/big"), metadata=auth, timeout=30)
        assert deleted.deleted
        wait_for(lambda: read_or_none(custom_objects.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                     "modelcaches", name) is None, 30, what="ModelCache deleted")  # fmt: skip


def test_ensure_of_a_missing_model_reports_the_operators_reason_and_asking_again_tries_again(
    kube_api: client.ApiClient,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,  # noqa: F811
    cluster_server: str,
    hub: FakeHub,  # noqa: F811
) -> None:
    token = service_account_token(kube_api, namespace, "mx-client")
    updates: list[server_pb2.ModelStatusUpdate] = []

    def ensure() -> None:
        with grpc.insecure_channel(cluster_server) as channel:
            updates.extend(
                server_pb2_grpc.ModelServiceStub(channel).EnsureModelDownloaded(
                    server_pb2.ModelDownloadRequest(model_name="hf://org/absent"),
                    metadata=[("authorization", f"Bearer {token}")],
                    timeout=120,
                )
            )

    waiter = threading.Thread(target=ensure)
    waiter.start()
    name = cache_name(parse_source("hf://org/absent"), "main")
    batch = client.BatchV1Api(kube_api)
    wait_for(lambda: read_or_none(batch.read_namespaced_job, f"{name}-dl-g1-1", namespace), 60, what="Job")
    assert node.run_job_pod(namespace, f"{name}-dl-g1-1", timeout=120).exit_code == 3  # the downloader's "not found"
    waiter.join(120)
    assert updates[-1].status == server_pb2.MODEL_STATUS_ERROR
    assert updates[-1].reason == "NotFound" and "check the model name" in updates[-1].message

    # The model is published; the same request again is a new attempt of the same ModelCache, not the old error.
    hub.add("org/absent", BIG)
    updates.clear()
    waiter = threading.Thread(target=ensure)
    waiter.start()
    wait_for(lambda: read_or_none(batch.read_namespaced_job, f"{name}-dl-g1-2", namespace), 60, what="second Job")
    assert node.run_job_pod(namespace, f"{name}-dl-g1-2", timeout=120).exit_code == 0
    waiter.join(120)
    assert updates[-1].status == server_pb2.MODEL_STATUS_DOWNLOADED, updates[-1]
    cache = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelcaches", name
    )
    assert cache["metadata"]["generation"] == 1 and cache["status"]["lastHandledRetry"].startswith("server-")


def _list_and_stream_from_the_claim(stub: server_pb2_grpc.ModelServiceStub, commit: str, total: int) -> None:
    """Listing and streaming read the claim the server mounts."""
    listed = stub.ListModels(server_pb2.ListModelsRequest(), timeout=30)
    assert [(m.model_name, m.resolved_revision, m.size_bytes) for m in listed.models] == [
        ("hf://org/big", commit, total)
    ]
    files = stub.ListModelFiles(server_pb2.ModelFilesRequest(model_name="org/big"), timeout=30)
    assert files.cache_relative_path == f"models--org--big/snapshots/{commit}"
    got: dict[str, bytearray] = {}
    for chunk in stub.StreamModelFiles(server_pb2.ModelFilesRequest(model_name="org/big"), timeout=60):
        got.setdefault(chunk.path, bytearray()).extend(chunk.data)
    assert {k: bytes(v) for k, v in got.items()} == BIG


def _cli_download_with_and_without_token(endpoint: str, token: str, tmp_path: Path, commit: str) -> None:
    """The CLI's --strategy server goes the same way (the token from MODEL_EXPRESS_TOKEN_FILE)."""
    token_file = tmp_path / "token"
    token_file.write_text(token)
    cli = [sys.executable, "-m", "modelexpress.cli.main", "--endpoint", endpoint, "--format", "json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / "cli.db")}
    refused_cli = subprocess.run([*cli, "model", "download", "org/big", "--strategy", "server"],
                                 env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused_cli.returncode == 4 and "UNAUTHENTICATED" in refused_cli.stderr
    done = subprocess.run([*cli, "model", "download", "org/big", "--strategy", "server"],
                          env={**env, "MODEL_EXPRESS_TOKEN_FILE": str(token_file)},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"model": "hf://org/big", "status": "downloaded",
                                       "resolvedRevision": commit, "via": "server"}  # fmt: skip
