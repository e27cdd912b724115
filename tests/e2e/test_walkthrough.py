"""The README's "On a cluster" walkthrough on a real node: images from the Dockerfiles, `helm install`
with production features, a ModelCache downloaded by a real Job pod, vLLM replicas where the second
pulls its weights from the first over NIXL between pods, and the operations a platform engineer does
next (a replica deleted, a scale-up, the operator restarted, an upgrade, an uninstall).

Only the image names (imported, `pullPolicy: Never`), the hub endpoint and the storage differ from
what a user runs; tests/e2e/values-node.yaml and tests/e2e/manifests/ hold them.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.cluster import Cluster
from tests.e2e.conftest import (
    CHART,
    INFERENCE,
    MANIFESTS,
    RELEASE,
    SYSTEM,
    TIMINGS,
    Hub,
    StepError,
    custom,
    deployment_ready,
    pod_ready,
    values,
    wait,
)

PROMPT = [5, 17, 42, 99]
WEIGHTS = re.compile(r"rank 0: ([\d.]+) MiB from (disk|peers (.+?)) in ([\d.]+)s")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod addresses: never through a proxy


def pod(cluster: Cluster, name: str, namespace: str = INFERENCE) -> client.V1Pod:
    return client.CoreV1Api(cluster.api).read_namespaced_pod(name, namespace)


def replaced(cluster: Cluster, gone: client.V1Pod) -> bool:
    """A pod of the same name and another UID exists (between the two, the name reads 404)."""
    try:
        return bool(pod(cluster, gone.metadata.name).metadata.uid != gone.metadata.uid)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def weights_line(cluster: Cluster, name: str) -> tuple[str, list[str], float]:
    """Where the pod's rank 0 got its weights: ('disk', [], seconds) or ('peers', [endpoints], seconds)."""
    log = cluster.kubectl("-n", INFERENCE, "logs", name)
    found = WEIGHTS.search(log)
    if found is None:
        raise StepError(f"{name} logged no weights line:\n{log[-3000:]}")
    kind = "disk" if found.group(2) == "disk" else "peers"
    return kind, found.group(3).split(", ") if kind == "peers" else [], float(found.group(4))


def greedy_tokens(ip: str) -> list[int]:
    body = {"model": "org/tiny-llama", "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "return_token_ids": True}
    request = urllib.request.Request(f"http://{ip}:8000/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with DIRECT.open(request, timeout=60) as response:
        tokens: list[int] = json.loads(response.read())["choices"][0]["token_ids"]
    return tokens


def metric(ip: str, name: str) -> float:
    with DIRECT.open(f"http://{ip}:8000/metrics", timeout=30) as response:
        text = response.read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    if not values:
        raise StepError(f"{name} is not among the metrics of {ip}:8000")
    return values[0]


def sources(cluster: Cluster) -> list[dict[str, Any]]:
    """Every recorded source entry of the inference namespace (the operator's ModelSourceSlices)."""
    listed = custom(cluster).list_namespaced_custom_object(
        "modelexpress.io", "v1alpha1", INFERENCE, "modelsourceslices"
    )
    return [s for item in listed["items"] for s in (item.get("status") or {}).get("sources") or []]


def test_the_images_run_as_non_root_on_a_read_only_root(cluster: Cluster, release: dict[str, Any]) -> None:
    for component in ("operator", "server"):
        selector = f"app.kubernetes.io/component={component}"
        (running,) = client.CoreV1Api(cluster.api).list_namespaced_pod(SYSTEM, label_selector=selector).items
        assert running.spec.containers[0].security_context.read_only_root_filesystem is True
        assert cluster.kubectl("-n", SYSTEM, "exec", running.metadata.name, "--", "id", "-u").strip() == "65532"
        cannot = cluster.kubectl("-n", SYSTEM, "exec", running.metadata.name, "--", "touch", "/opt/mx/x", check=False)
        assert "Read-only file system" in cannot, cannot


def test_a_modelcache_is_downloaded_by_a_real_job_pod_onto_a_pvc(
    cluster: Cluster, model_cache: dict[str, Any], hub: Hub
) -> None:
    assert model_cache["status"]["phase"] == "Ready"
    (job_pod,) = client.CoreV1Api(cluster.api).list_namespaced_pod(INFERENCE, label_selector="job-name").items
    # A kubelet ran it: scheduled onto the real node, its container terminated with exit code 0.
    assert job_pod.spec.node_name == cluster.node_name and job_pod.status.phase == "Succeeded"
    assert job_pod.status.container_statuses[0].state.terminated.exit_code == 0
    claim = client.CoreV1Api(cluster.api).read_namespaced_persistent_volume_claim("tiny-llama-cache", INFERENCE)
    volume = client.CoreV1Api(cluster.api).read_persistent_volume(claim.spec.volume_name)
    snapshot = Path(volume.spec.host_path.path) / "models--org--tiny-llama" / "snapshots" / hub.commit
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors"]


def test_replica_2_pulls_from_replica_1_and_both_answer_alike(cluster: Cluster, replicas: list[str]) -> None:
    first, second = (pod(cluster, name) for name in replicas)
    kind, _, disk_seconds = weights_line(cluster, first.metadata.name)
    assert kind == "disk"
    kind, peers, pull_seconds = weights_line(cluster, second.metadata.name)
    assert kind == "peers" and peers == [f"{first.status.pod_ip}:50051"], peers
    TIMINGS["replica 1 weights from disk"], TIMINGS["replica 2 weights from peers"] = disk_seconds, pull_seconds
    assert metric(second.status.pod_ip, "modelexpress_pull_bytes_total") > 0
    assert metric(first.status.pod_ip, "modelexpress_pull_bytes_total") == 0
    tokens = greedy_tokens(first.status.pod_ip)
    assert len(tokens) == 12 and greedy_tokens(second.status.pod_ip) == tokens


def test_kubectl_get_modelmetadatas_lists_both_workers(cluster: Cluster, replicas: list[str]) -> None:
    def both_ready() -> bool:
        ready = {s["pod"] for s in sources(cluster) if s.get("state") == "Ready"}
        return set(replicas) <= ready

    wait(cluster, "both workers recorded", INFERENCE, "app=tiny-llama", both_ready, 60)

    def summed_up() -> str | None:  # the ModelMetadata's summary is written after the slices
        table = cluster.kubectl("-n", INFERENCE, "get", "modelmetadatas")
        header = table.splitlines()[0].split()
        row = next(line.split() for line in table.splitlines() if "org/tiny-llama" in line)
        return table if int(row[header.index("READY-SOURCES")]) >= 2 and row[header.index("PHASE")] == "Ready" else None

    wait(cluster, "both in kubectl get modelmetadatas", INFERENCE, "app=tiny-llama", summed_up, 10)
    # the entries themselves: the model's slices, every pod in them (as docs/modelmetadata.md shows)
    columns = "custom-columns=SLICE:.metadata.name,POD:.status.sources[*].pod,STATE:.status.sources[*].state"
    slices = cluster.kubectl("-n", INFERENCE, "get", "modelsourceslices", "-o", columns)
    assert all(pod in slices for pod in replicas), slices


def test_a_deleted_replica_leaves_the_record_and_a_new_replica_pulls_from_a_running_one(
    cluster: Cluster, replicas: list[str]
) -> None:
    gone, kept = pod(cluster, replicas[0]), pod(cluster, replicas[1])
    cluster.kubectl("-n", INFERENCE, "delete", "pod", gone.metadata.name, "--wait=false")
    wait(cluster, "deleted replica's record removed", INFERENCE, "app=tiny-llama",
         lambda: all(s.get("podUid") != gone.metadata.uid for s in sources(cluster)), 60)  # fmt: skip
    # The StatefulSet replaces it; the replacement pulls from the replica still running.
    wait(cluster, "replaced replica Ready", INFERENCE, "app=tiny-llama",
         lambda: replaced(cluster, gone) and pod_ready(cluster, gone.metadata.name), 420)  # fmt: skip
    kind, peers, _ = weights_line(cluster, gone.metadata.name)
    assert kind == "peers" and peers == [f"{kept.status.pod_ip}:50051"], peers
    # Scaled to 3: the third replica pulls from the running ones (replica 2 among them).
    started = time.monotonic()
    cluster.kubectl("-n", INFERENCE, "scale", "statefulset/tiny-llama", "--replicas=3")
    wait(cluster, "replica 3 Ready", INFERENCE, "app=tiny-llama", lambda: pod_ready(cluster, "tiny-llama-2"), 420)
    TIMINGS["scale to 3 -> replica 3 Ready"] = time.monotonic() - started
    kind, peers, _ = weights_line(cluster, "tiny-llama-2")
    assert kind == "peers" and f"{kept.status.pod_ip}:50051" in peers, peers
    assert greedy_tokens(pod(cluster, "tiny-llama-2").status.pod_ip) == greedy_tokens(kept.status.pod_ip)


def test_the_operator_deleted_mid_way_comes_back_and_carries_on(cluster: Cluster, replicas: list[str]) -> None:
    selector = "app.kubernetes.io/component=operator"
    (old,) = client.CoreV1Api(cluster.api).list_namespaced_pod(SYSTEM, label_selector=selector).items
    cluster.kubectl("-n", SYSTEM, "delete", "pod", old.metadata.name, "--wait=false")

    def replaced() -> bool:
        pods = client.CoreV1Api(cluster.api).list_namespaced_pod(SYSTEM, label_selector=selector).items
        return [p.metadata.uid for p in pods] != [old.metadata.uid] and deployment_ready(
            cluster, SYSTEM, f"{RELEASE}-operator"
        )

    wait(cluster, "operator back", SYSTEM, selector, replaced, 180)
    # It carries on: a new ModelCache is reconciled to Ready, and the running workers stay recorded.
    manifest = (MANIFESTS / "modelcache.yaml").read_text().replace("name: tiny-llama", "name: tiny-llama-again")
    (cluster.workdir / "again.yaml").write_text(manifest)
    cluster.kubectl("apply", "-f", str(cluster.workdir / "again.yaml"))
    cluster.kubectl("-n", INFERENCE, "wait", "--for=condition=Ready", "modelcache/tiny-llama-again", "--timeout=180s",
                    timeout=200)  # fmt: skip
    cluster.kubectl("-n", INFERENCE, "delete", "modelcache", "tiny-llama-again")
    running = {p.metadata.name for p in client.CoreV1Api(cluster.api).list_namespaced_pod(
        INFERENCE, label_selector="app=tiny-llama").items if pod_ready(cluster, p.metadata.name)}  # fmt: skip
    wait(cluster, "workers recorded after the restart", INFERENCE, "app=tiny-llama",
         lambda: running <= {s["pod"] for s in sources(cluster) if s.get("state") == "Ready"}, 60)  # fmt: skip


def test_a_pod_without_the_annotation_is_not_touched_by_the_webhook(cluster: Cluster, release: dict[str, Any]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "namespace": INFERENCE},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
            "containers": [
                {
                    "name": "c",
                    "image": "local/modelexpress-worker:dev",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                }
            ],
        },
    }
    created = client.CoreV1Api(cluster.api).create_namespaced_pod(INFERENCE, body)
    try:
        assert created.spec.containers[0].env is None and not created.spec.volumes
        assert "modelexpress.io/p2p" not in (created.metadata.labels or {})
        wait(cluster, "plain pod Ready", INFERENCE, "x=none", lambda: pod_ready(cluster, "plain"), 120)
    finally:
        client.CoreV1Api(cluster.api).delete_namespaced_pod("plain", INFERENCE, grace_period_seconds=0)


def test_helm_upgrade_with_a_changed_value_rolls_out(cluster: Cluster, release: dict[str, Any], hub: Hub) -> None:
    import helm_python

    base = values(hub)
    operator = {**base.get("operator", {}), "statusTtlSecs": 45}
    with helm_python.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=SYSTEM) as helm:
        upgraded = helm.upgrade(CHART, RELEASE, {**base, "operator": operator})
    assert upgraded["status"] == "deployed" and upgraded["revision"] == release["revision"] + 1
    selector = "app.kubernetes.io/component=operator"

    def rolled_out() -> bool:
        if not deployment_ready(cluster, SYSTEM, f"{RELEASE}-operator"):
            return False
        pods = client.CoreV1Api(cluster.api).list_namespaced_pod(SYSTEM, label_selector=selector).items
        env = [{e.name: e.value for e in p.spec.containers[0].env} for p in pods]
        return len(pods) == 1 and env[0].get("MX_STATUS_TTL_SECS") == "45"

    wait(cluster, "upgrade rolled out", SYSTEM, selector, rolled_out, 180)


def test_no_pod_ever_tried_a_registry(cluster: Cluster, replicas: list[str]) -> None:
    events = client.CoreV1Api(cluster.api).list_event_for_all_namespaces().items
    pulls = [f"{e.involved_object.name}: {e.reason} {e.message}" for e in events
             if e.reason in ("Pulling", "Failed", "ErrImagePull", "ErrImageNeverPull", "BackOff")
             and "image" in (e.message or "").lower()]  # fmt: skip
    assert not pulls, pulls


def test_helm_uninstall_leaves_no_object_of_the_release(cluster: Cluster, release: dict[str, Any]) -> None:
    """Last: the release goes. CRDs stay (Helm never deletes them), and so does the server's cache claim,
    which the chart marks `helm.sh/resource-policy: keep` (downloaded models outlive the release)."""
    import helm_python

    with helm_python.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=SYSTEM) as helm:
        helm.uninstall(RELEASE, wait="watcher", timeout=180)
    wait(cluster, "release pods gone", SYSTEM, "app.kubernetes.io/instance=modelexpress",
         lambda: not client.CoreV1Api(cluster.api).list_namespaced_pod(SYSTEM).items, 120)  # fmt: skip
    left = cluster.kubectl(
        "get",
        "all,secrets,configmaps,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,"
        "mutatingwebhookconfigurations,networkpolicies,persistentvolumeclaims",
        "-A", "-l", "app.kubernetes.io/instance=modelexpress", "-o", "name",
    )  # fmt: skip
    assert left.split() == ["persistentvolumeclaim/modelexpress-server-cache"], left

    # What the operator made at run time goes with its owners (the garbage collector deletes it soon after).
    def made_by_the_operator() -> list[str]:
        listed = cluster.kubectl("-n", SYSTEM, "get", "secrets,configmaps", "-o", "name").split()
        return [name for name in listed if "modelexpress" in name]

    wait(cluster, "operator-made objects collected", SYSTEM, "none=none", lambda: not made_by_the_operator(), 60)
    crds = cluster.kubectl("get", "crds", "-o", "name")
    assert "modelcaches.modelexpress.io" in crds and "modelmetadatas.modelexpress.io" in crds
