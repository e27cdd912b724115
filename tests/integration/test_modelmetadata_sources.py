"""The operator records source workers in ModelMetadata; workers find peers through it.

Real kube-apiserver + etcd + controller-manager, the real kopf operator, real gRPC WorkerServices on
127.0.0.1 (a `fleet_proc` process hosting many, or real NIXL source processes), the node helper
playing the kubelet. Pods opt in with `modelexpress.io/p2p: enabled`; the node helper reports them
Running and Ready at 127.0.0.1, where their WorkerServices listen on the annotated ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from hack.make_tiny_model import tiny_model as make_tiny_model
from hack.make_tiny_model import write
from modelexpress.api.modelmetadata import ModelIdentity
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.registry.kubernetes import KubernetesRegistry
from modelexpress_operator.rbac import WORKER_RULES
from tests.harness.fixtures import GROUP, VERSION, ServiceAccountClient
from tests.harness.kube import (
    condition,
    create_slice,
    get_table,
    recorded_slices,
    recorded_sources,
    wait_for,
    write_slice,
)
from tests.harness.node import NodeHelper
from tests.harness.processes import die_with_parent, free_port
from tests.helpers.sources import Fleet, fleet, start_source

pytestmark = pytest.mark.k8s
ROOT = Path(__file__).resolve().parents[2]
PLURAL = "modelmetadatas"


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    write(out, make_tiny_model(layers=2, hidden=128), files=2)
    return out


def worker_pod(name: str, port: int | None = None, **annotations: str) -> dict[str, Any]:
    notes = {"modelexpress.io/p2p": "enabled", **annotations}
    if port is not None:
        notes["modelexpress.io/worker-port"] = str(port)
    return {
        "metadata": {"name": name, "annotations": notes},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]},
    }


def start_worker_pods(
    core: client.CoreV1Api,
    node: NodeHelper,
    namespace: str,
    workers: Fleet,
    names: list[str],
    ready: bool = True,
    **identity: Any,
) -> dict[str, str]:
    """Create the pods, start one real WorkerService per pod (reporting the pod's UID), report them Ready."""
    uids = {}
    for name in names:
        uids[name] = core.create_namespaced_pod(namespace, worker_pod(name)).metadata.uid
    ports = workers.start([{**identity, "pod": name, "uid": uids[name]} for name in names])
    for name, port in zip(names, ports, strict=True):
        core.patch_namespaced_pod(
            name, namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": str(port)}}}
        )
        if ready:
            node.mark_running(namespace, name, ip="127.0.0.1")
    return uids


def status_of(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    status: dict[str, Any] = obj.get("status") or {}
    return status


def sources_when(
    custom: client.CustomObjectsApi, namespace: str, name: str, check: Callable[[list[dict[str, Any]]], bool]
) -> Callable[[], list[dict[str, Any]] | None]:
    def probe() -> list[dict[str, Any]] | None:
        sources = recorded_sources(custom, namespace, name)
        return sources if check(sources) else None

    return probe


def delete_pod_now(core: client.CoreV1Api, namespace: str, name: str) -> None:
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


@pytest.fixture
def run_operator(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., contextlib.AbstractContextManager[Any]]:
    """Factory of in-process kopf operators for the test namespace (several in a row: restarts)."""
    from kopf.testing import KopfRunner

    @contextlib.contextmanager
    def run(ttl: float = 30, kubeconfig: Path | None = None) -> Iterator[Any]:
        monkeypatch.setenv("MX_STATUS_TTL_SECS", str(ttl))
        if kubeconfig is not None:
            monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        args = ["run", "--standalone", "--namespace", namespace, "-m", "modelexpress_operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.exception
        assert runner.exit_code == 0, runner.output[-5000:]

    return run


# --- recording ----------------------------------------------------------------------------------


def test_64_workers_recorded_removed_and_rebuilt_after_restart(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    core = client.CoreV1Api(kube_api)
    identity = ModelIdentity(model_name="test/fleet-64")
    name = identity.resource_name()
    names = [f"worker-{i:02d}" for i in range(64)]
    with fleet() as workers, run_operator():
        uids = start_worker_pods(core, node, namespace, workers, names, model="test/fleet-64")
        # Nobody declared this identity: the operator creates its ModelMetadata and records all 64 in it.
        sources = wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 64), 60, what="64 sources")
        assert {s["podUid"] for s in sources} == set(uids.values())
        assert all(s["state"] == "Ready" and s["endpoint"].startswith("127.0.0.1:") for s in sources)
        assert all(s["tensorCount"] == 1 and s["bytes"] == 64 and s["rank"] == 0 for s in sources)
        obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        assert obj["metadata"]["labels"]["modelexpress.io/identity"] == identity.identity_hash()
        assert obj["metadata"]["labels"]["modelexpress.io/tp"] == "1"
        status = wait_for(
            lambda: (s := status_of(custom_objects, namespace, name)).get("readyReplicas") == 64 and s, 30
        )
        assert status["phase"] == "Ready" and status["readySources"] == 64
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        ready = condition({"status": status}, "Ready")
        assert ready is not None and ready["status"] == "True" and ready["reason"] == "SourcesReady"

        # 10 pods deleted: gone from the status within seconds.
        started = time.monotonic()
        for victim in names[:10]:
            delete_pod_now(core, namespace, victim)
        gone = {uids[v] for v in names[:10]}
        wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 54), 10, what="10 sources removed")
        assert time.monotonic() - started < 10
        assert not gone & {s["podUid"] for s in recorded_sources(custom_objects, namespace, name)}

    # Operator down: two more pods go away, and someone wipes the recorded sources.
    for victim in names[10:12]:
        delete_pod_now(core, namespace, victim)
    custom_objects.delete_collection_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelsourceslices", label_selector=f"modelexpress.io/model-metadata={name}"
    )
    with fleet() as workers2, run_operator():
        # The first 64 workers' fleet was stopped with the operator; serve the 52 survivors again.
        survivors = names[12:]
        ports = workers2.start([{"model": "test/fleet-64", "pod": n, "uid": uids[n]} for n in survivors])
        for pod, port in zip(survivors, ports, strict=True):
            core.patch_namespaced_pod(
                pod, namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": str(port)}}}
            )
        rebuilt = wait_for(
            sources_when(
                custom_objects, namespace, name, lambda s: len(s) == 52 and all(x["state"] == "Ready" for x in s)
            ),
            60,
            what="status rebuilt from the pods",
        )
        assert {s["podUid"] for s in rebuilt} == {uids[n] for n in survivors}


def test_restarted_operator_keeps_entries_of_live_pods_and_prunes_the_rest(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    core = client.CoreV1Api(kube_api)
    name = ModelIdentity(model_name="test/restart").resource_name()
    with fleet() as workers:
        with run_operator():
            uids = start_worker_pods(core, node, namespace, workers, ["a", "b", "c"], model="test/restart")
            wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 3), 30, what="3 sources")
        delete_pod_now(core, namespace, "c")  # while no operator runs
        with run_operator():
            # The restarted operator reads the recorded entries back: live pods stay, the deleted one goes.
            left = wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 2), 30, what="pruned")
            assert {s["podUid"] for s in left} == {uids["a"], uids["b"]}


def test_a_slice_deleted_or_edited_behind_the_operators_back_is_written_again(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    """Level-triggered, as the EndpointSlice controller: stable Ready workers change nothing (their heartbeats
    write nothing), yet a slice someone deletes or edits holds their entries again within seconds, and a slice
    of the model the operator never made is deleted."""
    core = client.CoreV1Api(kube_api)
    identity = ModelIdentity(model_name="test/repair")
    name = identity.resource_name()
    three = lambda s: len(s) == 3 and all(x["state"] == "Ready" for x in s)  # noqa: E731
    with fleet() as workers, run_operator(ttl=600) as runner:
        uids = start_worker_pods(core, node, namespace, workers, ["a", "b", "c"], model="test/repair")
        wait_for(sources_when(custom_objects, namespace, name, three), 30, what="3 sources")
        [piece] = recorded_slices(custom_objects, namespace, name)
        written = piece["metadata"]["resourceVersion"]

        custom_objects.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelsourceslices", piece["metadata"]["name"]
        )
        back = wait_for(
            sources_when(custom_objects, namespace, name, three), 30, what="the deleted slice written again"
        )
        assert {s["podUid"] for s in back} == set(uids.values())
        [again] = recorded_slices(custom_objects, namespace, name)
        assert again["metadata"]["uid"] != piece["metadata"]["uid"]  # made anew, owned by the ModelMetadata
        assert again["metadata"]["ownerReferences"][0]["name"] == name

        custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "modelsourceslices", again["metadata"]["name"],
            {"status": {"sources": back[:1], "sourceCount": 1}},
        )  # fmt: skip
        wait_for(sources_when(custom_objects, namespace, name, three), 30, what="the edited slice written again")

        # A slice of the model the operator never made: created only (the operator may delete it before any
        # status could be written into it, so none is).
        create_slice(custom_objects, namespace, name, identity.identity_hash(), rank=0, index=7)
        wait_for(lambda: len(recorded_slices(custom_objects, namespace, name)) == 1, 30, what="the stray slice deleted")
        assert {s["podUid"] for s in recorded_sources(custom_objects, namespace, name)} == set(uids.values())
        assert written != recorded_slices(custom_objects, namespace, name)[0]["metadata"]["resourceVersion"]
    assert "deleted while it holds 3 entries: writing it again" in runner.output
    assert "changed by someone else: writing it again as recorded" in runner.output
    assert "holds nothing the operator placed there: deleting it" in runner.output


def test_not_ready_pod_leaves_and_silent_worker_turns_stale(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    core = client.CoreV1Api(kube_api)
    identity = WorkerIdentity(model_name="test/stale")
    name = identity.resource_name()
    registry = KubernetesRegistry(namespace, api=kube_api)
    with fleet() as steady, fleet() as hanging, fleet() as flaky, run_operator(ttl=2):
        start_worker_pods(core, node, namespace, steady, ["steady"], model="test/stale")
        start_worker_pods(core, node, namespace, hanging, ["hanging"], model="test/stale")
        start_worker_pods(core, node, namespace, flaky, ["flaky"], model="test/stale")
        wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 3), 30, what="3 sources")
        assert len(registry.find_ready(identity)) == 3

        node.mark_not_ready(namespace, "flaky")  # readiness probe fails: removed at once, no TTL wait
        wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 2), 10, what="not-Ready pod removed")

        hanging.pause()  # SIGSTOP: connections stay open, nothing answers
        started = time.monotonic()
        stale = wait_for(
            sources_when(custom_objects, namespace, name, lambda s: any(x["state"] == "Stale" for x in s)),
            15,
            what="a Stale entry",
        )
        assert time.monotonic() - started >= 1.0  # not before the TTL
        assert [s["pod"] for s in stale if s["state"] == "Stale"] == ["hanging"]
        handed_out = registry.find_ready(identity)
        assert [r.worker_id for r in handed_out] == ["steady/0"]
        # the summary follows the slices (written after them)
        wait_for(lambda: status_of(custom_objects, namespace, name).get("readySources") == 1, 10, what="1 Ready")
        # the operator's gauge counts the ranks by state as the status records them (the dashboard's panel)
        by_state = {"namespace": namespace, "model": name}
        wait_for(lambda: REGISTRY.get_sample_value("modelexpress_operator_sources", {**by_state, "state": "Stale"}) == 1,
                 10, what="Stale counted")  # fmt: skip
        assert REGISTRY.get_sample_value("modelexpress_operator_sources", {**by_state, "state": "Ready"}) == 1
        assert REGISTRY.get_sample_value("modelexpress_operator_sources", {**by_state, "state": "Draining"}) == 0

        hanging.resume()  # it answers again: Ready again
        wait_for(
            sources_when(
                custom_objects, namespace, name, lambda s: sorted(x["state"] for x in s) == ["Ready", "Ready"]
            ),
            15,
            what="recovered worker Ready again",
        )
    registry.close()


def test_pod_replaced_under_the_same_name_is_never_its_previous_incarnation(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    core = client.CoreV1Api(kube_api)
    identity = WorkerIdentity(model_name="test/rolling")
    name = identity.resource_name()
    registry = KubernetesRegistry(namespace, api=kube_api)
    with fleet() as old, fleet() as new, run_operator():
        old_uid = start_worker_pods(core, node, namespace, old, ["vllm-0"], model="test/rolling")["vllm-0"]
        first = wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 1), 30)[0]
        assert first["podUid"] == old_uid
        port = int(first["endpoint"].rsplit(":", 1)[1])

        # Rolling restart: same pod name, same IP and port, a new UID; the new worker is still loading.
        delete_pod_now(core, namespace, "vllm-0")
        old.command("stop", index=0)
        wait_for(lambda: not recorded_sources(custom_objects, namespace, name), 10, what="old incarnation removed")
        new_uid = core.create_namespaced_pod(namespace, worker_pod("vllm-0", port)).metadata.uid
        assert new_uid != old_uid
        new.start([{"model": "test/rolling", "pod": "vllm-0", "uid": new_uid, "port": port, "state": "Initializing"}])
        node.mark_running(namespace, "vllm-0", ip="127.0.0.1")
        entry = wait_for(sources_when(custom_objects, namespace, name, lambda s: len(s) == 1), 30)[0]
        assert entry["podUid"] == new_uid and entry["state"] == "Initializing"
        assert registry.find_ready(identity) == []  # never handed out as the Ready old one

        new.command("state", index=0, state="Ready")
        wait_for(sources_when(custom_objects, namespace, name, lambda s: s and s[0]["state"] == "Ready"), 10)
        [record] = registry.find_ready(identity)
        assert record.pod_uid == new_uid
    registry.close()


def test_user_declared_metadata_is_used_and_pod_can_pin_one(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    core = client.CoreV1Api(kube_api)
    custom_objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelMetadata",
            "metadata": {"name": "qwen"},
            "spec": {"modelName": "Qwen/Qwen3-0.6B", "tensorParallelSize": 2},
        },
    )
    with fleet() as workers, run_operator():
        # One instance of TP2: ranks 0 and 1 in two pods, declared ahead of time by the user.
        start_worker_pods(
            core, node, namespace, workers, ["tp-0"], model="Qwen/Qwen3-0.6B", tp=2, rank=0, instance="i1"
        )
        half = wait_for(sources_when(custom_objects, namespace, "qwen", lambda s: len(s) == 1), 30)
        assert half[0]["rank"] == 0
        assert status_of(custom_objects, namespace, "qwen").get("readyReplicas", 0) == 0
        start_worker_pods(
            core, node, namespace, workers, ["tp-1"], model="Qwen/Qwen3-0.6B", tp=2, rank=1, instance="i1"
        )
        status = wait_for(
            lambda: (s := status_of(custom_objects, namespace, "qwen")).get("readyReplicas") == 1 and s, 30
        )
        assert status["phase"] == "Ready" and status["layout"] == "TP2xPP1"
        listed = custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        assert [o["metadata"]["name"] for o in listed] == ["qwen"]  # no second resource for the same identity
        events = (
            client.CoreV1Api(kube_api).list_namespaced_event(namespace, field_selector="involvedObject.name=qwen").items
        )
        assert any(e.reason == "SourcesReady" and e.type == "Normal" for e in events)


# --- end to end and least privilege ------------------------------------------------------------


def test_second_worker_finds_the_first_through_modelmetadata_and_pulls(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    tmp_path: Path,
    tiny_model: Path,
    service_account_client: ServiceAccountClient,
    operator_kubeconfig: Path,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    core = client.CoreV1Api(kube_api)
    source_uid = core.create_namespaced_pod(namespace, worker_pod("source-0")).metadata.uid
    source = start_source(
        tmp_path,
        "--model-dir",
        str(tiny_model),
        "--model-name",
        "test/e2e",
        env={"MX_POD_NAME": "source-0", "MX_POD_UID": source_uid, "MX_POD_NAMESPACE": namespace},
    )
    port = source.endpoint.rsplit(":", 1)[1]
    core.patch_namespaced_pod(
        "source-0", namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": port}}}
    )
    node.mark_running(namespace, "source-0", ip="127.0.0.1")
    # The target pod's ServiceAccount may only read ModelMetadata.
    service_account_client(namespace, "mx-worker", WORKER_RULES)
    target = {
        "metadata": {"name": "target-0"},
        "spec": {
            "serviceAccountName": "mx-worker",
            "containers": [
                {
                    "name": "worker",
                    "image": "modelexpress-worker",
                    "command": [sys.executable, "-m", "modelexpress.cli.main", "worker", "pull"],
                    "args": ["--model-name", "test/e2e", "--model-dir", str(tiny_model)],
                    "env": [
                        {"name": "MX_METADATA_BACKEND", "value": "kubernetes"},
                        {"name": "MX_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "MX_REGISTRY_PATH", "value": str(tmp_path / "must-not-be-used.db")},
                        {"name": "PYTHONPATH", "value": str(ROOT)},
                    ],
                }
            ],
        },
    }
    try:
        with run_operator(kubeconfig=operator_kubeconfig):  # the operator as its own ServiceAccount, not admin
            name = ModelIdentity(model_name="test/e2e").resource_name()
            wait_for(
                sources_when(custom_objects, namespace, name, lambda s: bool(s) and s[0]["state"] == "Ready"),
                30,
                what="the source recorded Ready",
            )
            core.create_namespaced_pod(namespace, target)
            run = node.run_pod(namespace, "target-0", timeout=120)
    finally:
        source.stop()
    assert run.exit_code == 0, run.stderr[-3000:]
    assert "from 1 source(s)" in run.stdout and "from disk" not in run.stdout, run.stdout
    assert "all checksums verified" in run.stdout
    assert not (tmp_path / "must-not-be-used.db").exists()  # found through ModelMetadata, not the embedded registry


def test_worker_service_account_reads_sources_and_every_write_is_refused(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    service_account_client: ServiceAccountClient,
) -> None:
    custom_objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelMetadata",
            "metadata": {"name": "m"},
            "spec": {"modelName": "a/b"},
        },
    )
    entry = {"pod": "p", "podUid": "u1", "rank": 0, "endpoint": "10.0.0.9:50051", "state": "Ready"}
    write_slice(custom_objects, namespace, "m", ModelIdentity(model_name="a/b").identity_hash(), [entry])
    api, kubeconfig = service_account_client(namespace, "reader", WORKER_RULES)
    registry = KubernetesRegistry(namespace, api=api, watch=True)
    try:
        [record] = registry.find_ready(WorkerIdentity(model_name="a/b"))
        assert record.endpoint == "10.0.0.9:50051" and record.pod_uid == "u1"
    finally:
        registry.close()
    # The CLI, as the same ServiceAccount.
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MX_METADATA_BACKEND": "kubernetes",
        "MX_POD_NAMESPACE": namespace,
    }
    cli = [sys.executable, "-m", "modelexpress.cli.main", "sources", "ls"]
    human = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert human.splitlines()[0].split()[:4] == ["MODEL", "LAYOUT", "RANK", "STATE"]
    assert "a/b" in human and "10.0.0.9:50051" in human and "Ready" in human
    listed = json.loads(
        subprocess.run(
            [*cli, "--format", "json"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    assert [(r["model"], r["layout"], r["podUid"], r["state"]) for r in listed] == [("a/b", "TP1xPP1", "u1", "Ready")]
    objs = client.CustomObjectsApi(api)
    writes = [
        lambda: objs.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelMetadata",
                "metadata": {"name": "x"},
                "spec": {"modelName": "a/b"},
            },
        ),
        lambda: objs.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "m", {"metadata": {"labels": {"a": "b"}}}
        ),
        lambda: objs.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "m", {"status": {"sources": []}}
        ),
        lambda: objs.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m"),
        lambda: objs.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "modelsourceslices", "m-s0", {"status": {"sources": []}}
        ),
        lambda: objs.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelsourceslices", "m-s0"),
    ]
    for attempt in writes:
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 403


# --- two replicas -------------------------------------------------------------------------------


def _start_operator_process(
    namespace: str, kubeconfig: Path, priority: int, metrics_port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MX_STATUS_TTL_SECS": "30",
        "MX_OPERATOR_PEERING_LIFETIME_SECS": "4",
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelexpress_operator",
                "--namespace",
                namespace,
                "--peering",
                "mx",
                "--priority",
                str(priority),
                "--metrics-port",
                str(metrics_port),
                "--health-port",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )


def _metric(port: int, name: str, **labels: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_replicas_only_the_peering_leader_writes(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    tmp_path: Path,
    operator_kubeconfig: Path,
) -> None:
    core = client.CoreV1Api(kube_api)
    custom_objects.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "mx"}},
    )
    leader_port, follower_port = free_port(), free_port()
    leader = _start_operator_process(namespace, operator_kubeconfig, 200, leader_port, tmp_path / "leader.log")
    follower: subprocess.Popen[bytes] | None = None
    name = ModelIdentity(model_name="test/peering").resource_name()
    patch = ("modelexpress_operator_api_requests_total", {"verb": "patch", "resource": "modelmetadatas/status"})

    def logs() -> str:
        files = (tmp_path / "leader.log", tmp_path / "follower.log")
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in files if p.exists())

    def peers() -> dict[str, Any]:
        obj = custom_objects.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", "mx")
        return dict(obj.get("status") or {})

    try:
        wait_for(lambda: _try_metric(leader_port, "modelexpress_operator_leader") == 1, 60, what=f"leader up\n{logs()}")
        wait_for(lambda: len(peers()) == 1, 30, what="the leader in the peering object")
        follower = _start_operator_process(
            namespace, operator_kubeconfig, 100, follower_port, tmp_path / "follower.log"
        )
        wait_for(lambda: len(peers()) == 2, 60, what=f"the follower in the peering object\n{logs()}")
        wait_for(lambda: _try_metric(follower_port, "modelexpress_operator_leader") == 0, 30, what="follower stands by")
        with fleet() as workers:
            start_worker_pods(core, node, namespace, workers, ["p-0", "p-1"], model="test/peering")
            wait_for(
                sources_when(custom_objects, namespace, name, lambda s: len(s) == 2), 60, what=f"sources\n{logs()}"
            )
            assert _metric(leader_port, patch[0], **patch[1]) >= 1
            assert _metric(follower_port, patch[0], **patch[1]) == 0  # frozen by kopf peering: no writes

            # The leader dies: the follower takes over within the peering lifetime and records new workers.
            leader.kill()
            leader.wait(10)
            start_worker_pods(core, node, namespace, workers, ["p-2"], model="test/peering")
            wait_for(
                sources_when(custom_objects, namespace, name, lambda s: len(s) == 3),
                60,
                what=f"takeover {peers()}\n{logs()}",
            )
            assert _metric(follower_port, patch[0], **patch[1]) >= 1
    finally:
        for proc in (leader, follower):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _try_metric(port: int, name: str) -> float | None:
    try:
        return _metric(port, name)
    except OSError:
        return None


# --- topology ---------------------------------------------------------------------------------


def test_sources_carry_their_node_topology_and_a_target_ranks_them_nearest_first(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    service_account_client: ServiceAccountClient,
    operator_kubeconfig: Path,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    """Nodes labelled with a zone and an NVLink clique; sources on three of them, a target scheduled on a
    fourth that holds none. The operator (as its own ServiceAccount) records each source's zone and
    domain, and its node map in the namespace's ConfigMap; the target (ModelMetadata and that one
    ConfigMap readable, no Node access) ranks same domain, then same zone, then elsewhere."""
    core = client.CoreV1Api(kube_api)
    zone, clique = "topology.kubernetes.io/zone", "nvidia.com/gpu.clique"
    places = {
        "target": {zone: "z1", clique: "c1"},
        "rack": {zone: "z1", clique: "c1"},
        "zone": {zone: "z1", clique: "c2"},
        "far": {zone: "z2", clique: "c1"},
    }
    nodes = {role: f"{namespace}-{role}" for role in places}
    for role, labels in places.items():
        core.create_node({"metadata": {"name": nodes[role], "labels": labels}})
    identity = WorkerIdentity(model_name="test/topology")
    name = identity.resource_name()
    try:
        with fleet() as workers, run_operator(kubeconfig=operator_kubeconfig):
            roles = ["far", "zone", "rack"]
            uids = {}
            for role in roles:
                pod = {**worker_pod(f"src-{role}"), "spec": {**worker_pod("x")["spec"], "nodeName": nodes[role]}}
                uids[role] = core.create_namespaced_pod(namespace, pod).metadata.uid
            ports = workers.start([{"model": "test/topology", "pod": f"src-{r}", "uid": uids[r]} for r in roles])
            for role, port in zip(roles, ports, strict=True):
                core.patch_namespaced_pod(
                    f"src-{role}", namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": str(port)}}}
                )
                node.mark_running(namespace, f"src-{role}", ip="127.0.0.1")
            # The target is scheduled but not started: its node's place is published all the same.
            target = {**worker_pod("target"), "spec": {**worker_pod("x")["spec"], "nodeName": nodes["target"]}}
            core.create_namespaced_pod(namespace, target)

            recorded = wait_for(
                sources_when(custom_objects, namespace, name, lambda s: len(s) == 3 and all("zone" in x for x in s)),
                30,
                what="3 sources with their zones",
            )
            by_pod = {s["pod"]: (s["zone"], s.get("domain")) for s in recorded}
            assert by_pod == {"src-far": ("z2", "c1"), "src-zone": ("z1", "c2"), "src-rack": ("z1", "c1")}
            held = wait_for(lambda: status_of(custom_objects, namespace, name).get("nodes"), 30, what="status.nodes")
            assert held == sorted(nodes[r] for r in roles)  # where the model is: `kubectl get mm -o wide`

            def topology_map() -> dict[str, str] | None:
                try:
                    data = core.read_namespaced_config_map("modelexpress-topology", namespace).data or {}
                except client.ApiException:
                    return None
                return data if set(nodes.values()) <= set(data) else None

            published = wait_for(topology_map, 30, what="every node in the topology ConfigMap")
            assert json.loads(published[nodes["target"]]) == {"zone": "z1", "domain": "c1"}

            worker_api, _ = service_account_client(namespace, "mx-worker", WORKER_RULES)
            registry = KubernetesRegistry(namespace, api=worker_api)
            from modelexpress.registry.ranking import Placement

            for _ in range(5):  # equal loads, so only the tiers order them
                ranked = registry.find_ready(identity, Placement(node=nodes["target"]))
                assert [r.worker_id for r in ranked] == ["src-rack/0", "src-zone/0", "src-far/0"]
            registry.close()
    finally:
        for role in places:
            with contextlib.suppress(client.ApiException):
                core.delete_node(nodes[role])


def test_weight_versions_are_recorded_shown_and_never_mixed(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
    operator_kubeconfig: Path,
) -> None:
    """RL replicas serving versions of a policy's checkpoint: each entry carries its version, the
    ModelMetadata shows the newest Ready one (by number: 10 after 2), and a target asking for version N
    is handed sources of exactly N."""
    from modelexpress.refit import version_identity

    core = client.CoreV1Api(kube_api)
    model = "test/rl-policy"
    name = version_identity(model, "1").resource_name()  # every version of the policy: one resource
    assert name == version_identity(model, "2").resource_name()
    registry = KubernetesRegistry(namespace, kube_api)
    spec = {"model": model, "engine": "checkpoint"}

    def newest(version: str) -> Callable[[], dict[str, Any] | None]:
        return lambda: (
            ((s := status_of(custom_objects, namespace, name)).get("weightsVersion") == version and s) or None
        )

    def endpoints(version: str) -> set[str]:
        return {r.endpoint for r in registry.find_ready(version_identity(model, version))}

    with fleet() as workers, run_operator(kubeconfig=operator_kubeconfig):  # as its own ServiceAccount
        start_worker_pods(core, node, namespace, workers, ["v1-a", "v1-b"], **spec, version="1")
        wait_for(newest("1"), 60, what="version 1 recorded")
        start_worker_pods(core, node, namespace, workers, ["v2-a"], **spec, version="2")
        status = wait_for(newest("2"), 30, what="version 2 shown as the newest")
        by_pod = {s["pod"]: s for s in recorded_sources(custom_objects, namespace, name)}
        assert {pod: s.get("weightsVersion") for pod, s in by_pod.items()} == {"v1-a": "1", "v1-b": "1", "v2-a": "2"}
        assert status["readySources"] == 3
        # `kubectl get modelsourceslices`: one slice (of rank 0), counting the three
        table = get_table(kube_api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/modelsourceslices")
        columns = [c["name"] for c in table["columnDefinitions"]]
        assert columns == ["Name", "Model-Metadata", "Rank", "Sources", "Ready", "Age"]
        assert [r["cells"][:5] for r in table["rows"]] == [[f"{name}-r0-s0", name, 0, 3, 3]]

        # A target of version N gets sources of N only; a version nobody serves gets none.
        assert endpoints("1") == {by_pod["v1-a"]["endpoint"], by_pod["v1-b"]["endpoint"]}
        assert endpoints("2") == {by_pod["v2-a"]["endpoint"]}
        assert endpoints("3") == set()
        assert registry.find_ready(version_identity(model, "1").model_copy(update={"weights_version": ""})) == []

        # Steps compare as numbers; `kubectl get modelmetadatas` has the column.
        start_worker_pods(core, node, namespace, workers, ["v10-a"], **spec, version="10")
        wait_for(newest("10"), 30, what="version 10 newer than 2")
        table = get_table(kube_api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/modelmetadatas")
        columns = [c["name"] for c in table["columnDefinitions"]]
        row = next(r for r in table["rows"] if r["cells"][0] == name)
        assert row["cells"][columns.index("Version")] == "10"
        assert {r.identity.weights_version for r in registry.list_sources()} == {"1", "2", "10"}

        # A replica installs the next version and offers it from the same port: its entry follows.
        workers.command("version", index=0, version="11")  # v1-a
        wait_for(newest("11"), 30, what="v1-a's entry moved to version 11")
        assert {s["pod"]: s.get("weightsVersion") for s in recorded_sources(custom_objects, namespace, name)}[
            "v1-a"
        ] == "11"
        assert endpoints("1") == {by_pod["v1-b"]["endpoint"]}

        # The newest replicas go: the column falls back to what is still served.
        for pod in ("v1-a", "v10-a", "v2-a"):
            delete_pod_now(core, namespace, pod)
        wait_for(newest("1"), 30, what="back to version 1")

        # The last one goes: its slice is empty, and deleted.
        delete_pod_now(core, namespace, "v1-b")
        wait_for(lambda: not recorded_sources(custom_objects, namespace, name), 30, what="the last entry removed")
        wait_for(lambda: not custom_objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelsourceslices")["items"], 30, what="the emptied slice deleted")  # fmt: skip
    registry.close()


def test_entries_of_a_release_before_slices_move_into_slices_without_losing_a_ready_source(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    run_operator: Callable[..., contextlib.AbstractContextManager[Any]],
) -> None:
    """An upgrade: the ModelMetadata holds its entries in `status.sources`, as releases before slices wrote
    them, and one in a slice of no rank, as the first release with slices wrote them. The operator moves those
    of live pods into slices of their rank, then empties the list and deletes the old slice; a dead pod's
    entry goes."""
    core = client.CoreV1Api(kube_api)
    identity = WorkerIdentity(model_name="test/upgrade")
    name = identity.resource_name()
    silent = free_port()  # nothing answers there: what the slices hold can only come from the old list
    uids = {}
    for pod in ("a", "b", "c"):
        uids[pod] = core.create_namespaced_pod(namespace, worker_pod(pod, silent)).metadata.uid
        node.mark_running(namespace, pod, ip="127.0.0.1")
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelMetadata",
            "metadata": {"name": name, "labels": ModelIdentity.of(identity).labels()}, "spec": {"modelName": "test/upgrade"}}  # fmt: skip
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    old = [
        {"pod": pod, "podUid": uid, "rank": 0, "endpoint": f"127.0.0.1:{silent}", "state": "Ready"}
        for pod, uid in [("a", uids["a"]), ("b", uids["b"]), ("gone", "uid-of-a-deleted-pod")]
    ]
    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": {"sources": old, "readySources": 3}}
    )
    owner = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["metadata"]
    unranked = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelSourceSlice", "spec": {"modelMetadata": name},
                "metadata": {"name": f"{name}-s0", "labels": {"modelexpress.io/model-metadata": name,
                             "modelexpress.io/identity": ModelIdentity.of(identity).identity_hash()},
                             "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelMetadata",
                                                  "name": name, "uid": owner["uid"]}]}}  # fmt: skip
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelsourceslices", unranked)
    entry = {"pod": "c", "podUid": uids["c"], "rank": 0, "endpoint": f"127.0.0.1:{silent}", "state": "Ready"}
    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "modelsourceslices", f"{name}-s0", {"status": {"sources": [entry], "sourceCount": 1}}
    )
    registry = KubernetesRegistry(namespace, api=kube_api)
    wanted = {(uid, "Ready") for uid in uids.values()}

    def moved() -> bool:  # the new slice is created, then filled: awaited until it holds the three
        pieces = recorded_slices(custom_objects, namespace, name)
        held = {(s["podUid"], s["state"]) for p in pieces for s in (p.get("status") or {}).get("sources") or []}
        return [p["metadata"]["name"] for p in pieces] == [f"{name}-r0-s0"] and held == wanted

    with run_operator(ttl=600):
        wait_for(moved, 30, what="all three moved into one slice of rank 0, the old slice gone")
        status = wait_for(lambda: (s := status_of(custom_objects, namespace, name)).get("readySources") == 3 and s, 30)
        assert "sources" not in status  # the old list is gone once the slices hold its entries
        assert sorted(r.pod_uid or "" for r in registry.find_ready(identity)) == sorted(uids.values())
    registry.close()
