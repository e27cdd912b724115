"""Fixtures of the end-to-end suite on a real node (`make e2e-node`), each one step of the README's
"On a cluster" walkthrough: the cluster, the hub, the release, the ModelCache, the vLLM replicas.

Each fixture builds on the one before and is made once per run, so any test (or `-k` subset) gets
the state it needs whatever ran before it. A step that fails names itself, with the relevant pod's
events and last log lines; the timings of each step are printed at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.cluster import LOGS, Cluster, ClusterSetupError, start_cluster
from tests.e2e.provisioner import HostPathProvisioner
from tests.helpers.fake_hub import FakeHub
from tests.helpers.tiny_llama import write_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelexpress"
MANIFESTS = Path(__file__).parent / "manifests"
RELEASE, SYSTEM, INFERENCE = "modelexpress", "mx-system", "inference"
MODEL = "org/tiny-llama"
TIMINGS: dict[str, float] = {}
TIMINGS_FILE = LOGS / "timings.json"


class StepError(AssertionError):
    """A step of the walkthrough failed; the message names it and shows what the cluster said."""


def pod_report(cluster: Cluster, namespace: str, selector: str) -> str:
    """Events and last log lines of the pods matching `selector`: what a failure shows."""
    lines = [cluster.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "wide", check=False)]
    for pod in client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, label_selector=selector).items:
        name = pod.metadata.name
        lines.append(f"--- events of {namespace}/{name}")
        lines.append(cluster.kubectl("-n", namespace, "get", "events", "--field-selector",
                                     f"involvedObject.name={name}", check=False))  # fmt: skip
        lines.append(f"--- last log lines of {namespace}/{name}")
        lines.append(cluster.kubectl("-n", namespace, "logs", name, "--all-containers", "--tail=40", check=False))
    return "\n".join(lines)


def wait(cluster: Cluster, step: str, namespace: str, selector: str, probe: Any, timeout: float) -> float:
    """Seconds until `probe()` is truthy; a timeout fails `step` with the pods' events and logs."""
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            raise StepError(
                f"step '{step}' did not finish in {timeout:.0f}s\n{pod_report(cluster, namespace, selector)}"
            )
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        started = start_cluster()
    except ClusterSetupError as exc:
        pytest.fail(f"e2e-node: {exc}", pytrace=False)
    TIMINGS.update(started.timings)
    provisioner = HostPathProvisioner(started.api, started.workdir / "volumes")
    try:
        provisioner.start()
        started.kubectl("create", "namespace", INFERENCE)
        yield started
    finally:
        provisioner.stop()
        logs = started.collect_logs()
        started.stop()
        TIMINGS_FILE.write_text(json.dumps(TIMINGS, indent=2))
        print(f"\ne2e-node: logs of the control plane, the node and every pod are in {logs}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The timings of each step and where the logs are, pass or fail (fixture output is captured)."""
    if not TIMINGS:
        return
    terminalreporter.section("e2e-node timings (seconds)")
    for step, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{seconds:8.1f}  {step}")
    terminalreporter.write_line(f"logs of the control plane, the node and every pod: {LOGS}")


@dataclass(frozen=True)
class Hub:
    endpoint: str
    commit: str


@pytest.fixture(scope="session")
def hub(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A server that speaks the Hugging Face Hub API, on this machine's own address so pods reach it."""
    model = write_tiny_llama(tmp_path_factory.mktemp("hub") / "tiny-llama")
    with FakeHub(host=cluster.address) as server:
        repo = server.add(MODEL, {p.name: p.read_bytes() for p in model.iterdir()})
        yield Hub(server.endpoint, repo.commit)


def values(hub: Hub, **overrides: Any) -> dict[str, Any]:
    """The suite's values (tests/e2e/values-node.yaml), the hub endpoint and `overrides` (top-level keys)."""
    loaded: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "values-node.yaml").read_text())
    return {**loaded, "hfEndpoint": hub.endpoint, **overrides}


def deployment_ready(cluster: Cluster, namespace: str, name: str) -> bool:
    dep = client.AppsV1Api(cluster.api).read_namespaced_deployment(name, namespace)
    status = dep.status
    return bool(
        status.observed_generation == dep.metadata.generation
        and (status.updated_replicas or 0) == dep.spec.replicas
        and (status.ready_replicas or 0) == dep.spec.replicas
        and (status.replicas or 0) == dep.spec.replicas
    )


@pytest.fixture(scope="session")
def release(cluster: Cluster, hub: Hub) -> dict[str, Any]:
    """`helm install` of the chart (Helm's own engine, helm-python-sdk), then the operator Ready."""
    import helm_python

    started = time.monotonic()
    with helm_python.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=SYSTEM) as helm:
        installed: dict[str, Any] = helm.install(CHART, RELEASE, values(hub), create_namespace=True)
    if installed.get("status") != "deployed":
        raise StepError(f"step 'helm install' ended {installed.get('status')!r}")
    selector = "app.kubernetes.io/component=operator"
    wait(cluster, "operator Ready", SYSTEM, selector,
         lambda: deployment_ready(cluster, SYSTEM, f"{RELEASE}-operator"), 180)  # fmt: skip
    TIMINGS["helm install -> operator Ready"] = time.monotonic() - started
    return installed


def custom(cluster: Cluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def condition_status(obj: dict[str, Any], type_: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


@pytest.fixture(scope="session")
def model_cache(cluster: Cluster, release: dict[str, Any]) -> dict[str, Any]:
    """The ModelCache applied and waited for as the README says (`kubectl wait --for=condition=Ready`)."""
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(MANIFESTS / "modelcache.yaml"))
    try:
        cluster.kubectl("-n", INFERENCE, "wait", "--for=condition=Ready", "modelcache/tiny-llama", "--timeout=180s",
                        timeout=200)  # fmt: skip
    except AssertionError as exc:
        raise StepError(f"step 'ModelCache Ready': {exc}\n{pod_report(cluster, INFERENCE, 'job-name')}") from None
    TIMINGS["ModelCache applied -> Ready"] = time.monotonic() - started
    cache: dict[str, Any] = custom(cluster).get_namespaced_custom_object(
        "modelexpress.io", "v1alpha1", INFERENCE, "modelcaches", "tiny-llama"
    )
    return cache


def pod_ready(cluster: Cluster, name: str) -> bool:
    try:
        pod = client.CoreV1Api(cluster.api).read_namespaced_pod(name, INFERENCE)
    except client.ApiException:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture(scope="session")
def replicas(cluster: Cluster, model_cache: dict[str, Any]) -> list[str]:
    """Two vLLM replicas (a StatefulSet, one after the other): replica 1 from the PVC, replica 2 from replica 1."""
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(MANIFESTS / "vllm.yaml"))
    names = ["tiny-llama-0", "tiny-llama-1"]
    for i, name in enumerate(names, start=1):
        wait(cluster, f"replica {i} Ready", INFERENCE, f"statefulset.kubernetes.io/pod-name={name}",
             lambda name=name: pod_ready(cluster, name), 420)  # fmt: skip
        TIMINGS[f"vLLM StatefulSet applied -> replica {i} Ready"] = time.monotonic() - started
    return names
