"""ModelCache through the real operator: PVC + download Job, the Job's pod run for real, status to Ready.

The control plane is real (no scheduler, no kubelet: the node helper binds the Job's pods and runs
their container command locally, with the PVC as a local directory); the downloader talks to a
local HTTP server speaking the Hugging Face Hub API; the operator runs in-process as its own
ServiceAccount with exactly the rules of `modelexpress_operator.rbac`.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from modelexpress.api import RETRY_ANNOTATION
from modelexpress_operator.rbac import CACHE_JOB_RULES
from tests.harness.fixtures import GROUP, VERSION
from tests.harness.kube import condition, get_table, read_or_none, wait_for
from tests.harness.node import ContainerConfigError, NodeHelper
from tests.helpers.fake_hub import FakeHub

pytestmark = pytest.mark.k8s
FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(2 << 20)}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add("org/tiny", FILES)
        server.add("org/private", {"config.json": b"{}"}, token="hf_cache_secret")
        yield server


@pytest.fixture
def cache_operator(
    request: pytest.FixtureRequest,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    hub: FakeHub,
    kube_api: client.ApiClient,
    operator_kubeconfig: Path,
) -> Iterator[Any]:
    """The operator with download Jobs pointed at the local hub, and the Jobs' ServiceAccount in place
    (settings of a test's own through indirect parametrization: a dict of environment variables)."""
    from kopf.testing import KopfRunner

    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "modelexpress-cache-job"}})
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "cache-job"}, "rules": CACHE_JOB_RULES})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "cache-job"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cache-job"},
            "subjects": [{"kind": "ServiceAccount", "name": "modelexpress-cache-job", "namespace": namespace}],
        },
    )
    monkeypatch.setenv("MX_OPERATOR_HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("MX_OPERATOR_WORKER_IMAGE", "modelexpress-worker:test")
    monkeypatch.setenv("MX_OPERATOR_EVICTION_CHECK_SECS", "1")
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))  # the operator's own ServiceAccount, not admin
    for variable, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(variable, value)
    args = ["run", "--standalone", "--namespace", namespace, "-m", "modelexpress_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.exception


def apply_cache(custom: client.CustomObjectsApi, namespace: str, name: str, **spec: Any) -> None:
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelcaches",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelCache", "metadata": {"name": name}, "spec": spec},
    )


def cache_status(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (
        custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", name).get("status") or {}
    )
    return status


def status_where(
    custom: client.CustomObjectsApi, namespace: str, name: str, check: Callable[[dict[str, Any]], bool]
) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = cache_status(custom, namespace, name)
        return status if check(status) else None

    return probe


def enforce_quota(core: client.CoreV1Api, namespace: str, name: str, hard: dict[str, str]) -> None:
    """A ResourceQuota, once the quota controller has counted what the namespace uses (only then does
    admission hold new objects to it)."""
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": name}, "spec": {"hard": hard}})

    def counted() -> object:
        return (core.read_namespaced_resource_quota(name, namespace).status or client.V1ResourceQuotaStatus()).used

    wait_for(counted, 30, what=f"quota {name} counted")


def cache_events(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, tuple[str, str]]:
    """reason -> (type, message) of the Events about one ModelCache."""
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=ModelCache,involvedObject.name={name}"
    ).items
    return {e.reason: (e.type, e.message) for e in events}


def test_modelcache_downloads_onto_its_pvc_and_turns_ready(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
    hub: FakeHub,
    control_plane: Any,
) -> None:
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    apply_cache(
        custom_objects,
        namespace,
        "tiny",
        source="hf://org/tiny",
        ignorePatterns=["*.md"],
        nodeSelector={"kubernetes.io/os": "linux"},
        resources={"limits": {"memory": "1Gi"}},
    )
    # The PVC is sized from the hub's metadata (2 MiB + headroom -> the 1 GiB floor) and owned by the cache.
    pvc = wait_for(
        lambda: read_or_none(core.read_namespaced_persistent_volume_claim, "tiny-cache", namespace), 30, what="PVC"
    )
    assert pvc.spec.resources.requests["storage"] == "1Gi"
    assert [o.kind for o in pvc.metadata.owner_references] == ["ModelCache"]
    # Node-local storage: a local PersistentVolume pinned to the node, bound to the claim.
    volume = f"{namespace}-tiny-local"
    core.create_persistent_volume({
        "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "local": {"path": "/mnt/disks/models"},
                 "claimRef": {"namespace": namespace, "name": "tiny-cache"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [node.name]}]}]}}},
    })  # fmt: skip
    wait_for(lambda: core.read_namespaced_persistent_volume_claim("tiny-cache", namespace).status.phase == "Bound", 60,
             what="claim bound to the local volume")  # fmt: skip
    job = wait_for(lambda: read_or_none(batch.read_namespaced_job, "tiny-dl-g1-1", namespace), 30, what="download Job")
    pod_spec = job.spec.template.spec
    container = pod_spec.containers[0]
    assert container.command == ["modelexpress"] and container.image == "modelexpress-worker:test"
    assert container.args[:5] == ["cache", "download", "hf://org/tiny", "--revision", "main"]
    assert container.args[5:7] == ["--ignore-pattern", "*.md"]
    assert pod_spec.node_selector == {"kubernetes.io/os": "linux"} and container.resources.limits == {"memory": "1Gi"}
    assert pod_spec.volumes[0].persistent_volume_claim.claim_name == "tiny-cache"
    assert pod_spec.service_account_name == "modelexpress-cache-job"
    assert job.metadata.owner_references[0].kind == "ModelCache"
    assert [r.action for r in job.spec.pod_failure_policy.rules] == ["FailJob", "Ignore"]

    run = node.run_job_pod(namespace, "tiny-dl-g1-1", timeout=120)
    assert run.exit_code == 0, run.stderr[-2000:]
    status = wait_for(status_where(custom_objects, namespace, "tiny", lambda s: s.get("phase") == "Ready"), 60)
    commit = hub.state.repos["org/tiny"].commit
    assert status["resolvedRevision"] == commit and status["sizeBytes"] == sum(len(v) for v in FILES.values())
    assert status["path"] == f"models--org--tiny/snapshots/{commit}"
    assert status["progress"]["percent"] == 100 and status["progress"]["filesTotal"] == 2  # written by the Job pod
    assert status["nodes"] == [node.name]  # where the model is: the local volume's node
    ready = condition({"status": status}, "Ready")
    assert ready is not None and ready["status"] == "True" and ready["reason"] == "Downloaded"
    # What changed is told in Events too (kubectl describe): the download starting, then its result.
    told = wait_for(lambda: (e := cache_events(core, namespace, "tiny")) and "Downloaded" in e and e, 30, what="Events")
    assert told["Downloaded"] == ("Normal", ready["message"]) and told["Downloading"][0] == "Normal"
    # The files are on the volume in the hub layout.
    snapshot = node.claim_dir(namespace, "tiny-cache") / status["path"]
    assert (snapshot / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    # The operator's gauges say the same (what the dashboard's cache panels read).
    gauge = {"namespace": namespace, "name": "tiny"}
    wait_for(lambda: REGISTRY.get_sample_value("modelexpress_operator_cache_phase", {**gauge, "phase": "Ready"}) == 1,
             30, what="cache phase gauge")  # fmt: skip
    assert REGISTRY.get_sample_value("modelexpress_operator_cache_phase", {**gauge, "phase": "Downloading"}) == 0
    assert REGISTRY.get_sample_value("modelexpress_operator_cache_downloaded_bytes", gauge) == status["sizeBytes"]
    assert REGISTRY.get_sample_value("modelexpress_operator_cache_size_bytes", gauge) == status["sizeBytes"]
    kubectl = shutil.which("kubectl")
    if kubectl:  # the CLI users have: kubectl wait returns at once on the Ready condition
        waited = subprocess.run(
            [kubectl, "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "wait",
             "--for=condition=Ready", "modelcache/tiny", "--timeout=10s"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert waited.returncode == 0, waited.stderr

    # Delete: the finalizer applies retentionPolicy Delete to the PVC it created.
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", "tiny")
    wait_for(
        lambda: read_or_none(core.read_namespaced_persistent_volume_claim, "tiny-cache", namespace) is None,
        30,
        what="PVC gone",
    )
    core.delete_persistent_volume(volume)
    wait_for(lambda: REGISTRY.get_sample_value("modelexpress_operator_cache_phase", {**gauge, "phase": "Ready"}) is None,
             30, what="the deleted cache's series removed")  # fmt: skip


def test_missing_model_fails_with_the_reason_and_no_retry(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
) -> None:
    # With a size given, the operator does not ask the hub first: the Job finds out, and says why.
    apply_cache(custom_objects, namespace, "nope", source="hf://org/nope", storage={"size": "1Gi"})
    run = node.run_job_pod(namespace, "nope-dl-g1-1", timeout=120)
    assert run.exit_code == 3
    status = wait_for(status_where(custom_objects, namespace, "nope", lambda s: s.get("phase") == "Failed"), 60)
    ready = condition({"status": status}, "Ready")
    assert (
        ready is not None and ready["reason"] == "NotFound" and "check the model name and revision" in ready["message"]
    )
    core = client.CoreV1Api(kube_api)
    told = wait_for(lambda: (e := cache_events(core, namespace, "nope")) and "NotFound" in e and e, 30, what="Event")
    assert told["NotFound"] == ("Warning", ready["message"])
    batch = client.BatchV1Api(kube_api)
    job = batch.read_namespaced_job("nope-dl-g1-1", namespace)
    assert any(c.type == "Failed" and c.reason == "PodFailurePolicy" for c in job.status.conditions)  # not retried
    # Without a size, the operator itself learns the model does not exist and creates nothing.
    apply_cache(custom_objects, namespace, "nope2", source="hf://org/nope")
    status = wait_for(status_where(custom_objects, namespace, "nope2", lambda s: s.get("phase") == "Failed"), 30)
    assert (condition({"status": status}, "Ready") or {}).get("reason") == "NotFound"
    assert (
        read_or_none(client.CoreV1Api(kube_api).read_namespaced_persistent_volume_claim, "nope2-cache", namespace)
        is None
    )


def test_pod_killed_mid_download_is_retried_by_the_job(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
) -> None:
    apply_cache(
        custom_objects, namespace, "flaky", source="hf://org/tiny", storage={"size": "1Gi", "retentionPolicy": "Retain"}
    )
    batch = client.BatchV1Api(kube_api)
    wait_for(lambda: read_or_none(batch.read_namespaced_job, "flaky-dl-g1-1", namespace), 30, what="download Job")
    first = wait_for(lambda: [p for p in node.job_pods(namespace, "flaky-dl-g1-1")], 30, what="first pod")[0]
    node.mark_running(namespace, first.metadata.name)
    node.mark_terminated(namespace, first.metadata.name, 137, "killed")  # OOM-killed / node lost mid-download
    run = node.run_job_pod(namespace, "flaky-dl-g1-1", timeout=120, wait=60)  # the Job controller's replacement
    assert run.exit_code == 0, run.stderr[-2000:]
    wait_for(status_where(custom_objects, namespace, "flaky", lambda s: s.get("phase") == "Ready"), 60)
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", "flaky")
    wait_for(
        lambda: (
            read_or_none(custom_objects.get_namespaced_custom_object, GROUP, VERSION, namespace, "modelcaches", "flaky")
            is None
        ),
        30,
    )
    assert read_or_none(
        client.CoreV1Api(kube_api).read_namespaced_persistent_volume_claim, "flaky-cache", namespace
    )  # Retain


RETRYING = {
    "MX_OPERATOR_JOB_BACKOFF_LIMIT": "0",
    "MX_OPERATOR_RETRY_INTERVAL_SECS": "3",
    "MX_OPERATOR_RETRY_LIMIT": "3",
}


@pytest.mark.parametrize("cache_operator", [RETRYING], ids=["retry-every-3s"], indirect=True)
def test_a_failed_job_is_retried_after_the_interval_through_a_refused_attempt(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
) -> None:
    """A Job that fails for a retryable reason is replaced after MX_OPERATOR_RETRY_INTERVAL_SECS, as
    `nextRetryTime` says; a replacement the API server refuses (a Job quota) is a condition and an Event
    with its reason, tried again until it is accepted; the next attempt downloads and turns Ready."""
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    apply_cache(custom_objects, namespace, "again", source="hf://org/tiny", storage={"size": "1Gi"})
    first = wait_for(lambda: node.job_pods(namespace, "again-dl-g1-1"), 30, what="first pod")[0]
    enforce_quota(core, namespace, "one-job", {"count/jobs.batch": "1"})
    node.mark_running(namespace, first.metadata.name)
    node.mark_terminated(namespace, first.metadata.name, 1, "hub unreachable")  # exit 1: NetworkError, retryable
    failed = wait_for(status_where(custom_objects, namespace, "again", lambda s: s.get("phase") == "Failed"), 60)
    ready = condition({"status": failed}, "Ready") or {}
    assert ready.get("reason") == "NetworkError", ready
    assert "attempt 2 of 3 starts in 3s" in ready["message"], ready["message"]
    table = get_table(kube_api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/modelcaches")
    columns = [c["name"] for c in table["columnDefinitions"]]
    (row,) = [dict(zip(columns, r["cells"], strict=True)) for r in table["rows"] if r["cells"][0] == "again"]
    assert (row["Phase"], row["Reason"]) == ("Failed", "NetworkError")  # kubectl get mxcache
    planned = datetime.fromisoformat(failed["nextRetryTime"])
    assert planned >= datetime.fromisoformat(ready["lastTransitionTime"]) + timedelta(seconds=2)
    refused = wait_for(
        status_where(
            custom_objects,
            namespace,
            "again",
            lambda s: (condition({"status": s}, "Ready") or {}).get("reason") == "Forbidden",
        ),
        60,
        what="refused retry",
    )
    message = (condition({"status": refused}, "Ready") or {})["message"]
    assert refused["phase"] == "Pending" and refused.get("nextRetryTime"), refused
    assert "attempt 2: creating download Job again-dl-g1-2 was refused" in message and "one-job" in message, message
    assert datetime.now(UTC) >= planned  # not before the interval
    told = wait_for(lambda: (e := cache_events(core, namespace, "again")) and "Forbidden" in e and e, 30, what="Event")
    assert told["Forbidden"][0] == "Warning" and "again-dl-g1-2" in told["Forbidden"][1]
    assert read_or_none(batch.read_namespaced_job, "again-dl-g1-2", namespace) is None
    core.delete_namespaced_resource_quota("one-job", namespace)
    run = node.run_job_pod(namespace, "again-dl-g1-2", timeout=120, wait=60)
    assert run.exit_code == 0, run.stderr[-2000:]
    done = wait_for(status_where(custom_objects, namespace, "again", lambda s: s.get("phase") == "Ready"), 60)
    assert done["jobName"] == "again-dl-g1-2" and "nextRetryTime" not in done, done
    assert batch.read_namespaced_job("again-dl-g1-1", namespace).status.failed  # kept for its logs


def retries_counted(outcome: str) -> float:
    """The operator's `modelexpress_operator_reconciles_total` for ModelCaches with this outcome."""
    labels = {"resource": "modelcaches", "outcome": outcome}
    return REGISTRY.get_sample_value("modelexpress_operator_reconciles_total", labels) or 0.0


def annotate_retry(custom: client.CustomObjectsApi, namespace: str, name: str, value: str) -> None:
    """`kubectl annotate mxcache NAME modelexpress.io/retry=VALUE --overwrite`."""
    patch = {"metadata": {"annotations": {RETRY_ANNOTATION: value}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", name, patch)


def test_the_retry_annotation_starts_one_more_attempt_of_a_failed_or_evicted_cache(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
    hub: FakeHub,
) -> None:
    """A failure retrying cannot fix (the model is not on the hub yet) is final until the user fixes the
    cause and annotates the cache: the next attempt starts at once, without a spec change; an evicted
    cache downloads again the same way (its PVC made again); a request in any other phase is recorded
    and answered with an Event, and no value is acted on twice."""
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    counted = {outcome: retries_counted(outcome) for outcome in ("retry-requested", "retry-ignored")}
    apply_cache(
        custom_objects, namespace, "later", source="hf://org/later", storage={"size": "1Gi"},
        eviction={"unusedThreshold": "2s"},
    )  # fmt: skip
    wait_for(status_where(custom_objects, namespace, "later", lambda s: s.get("jobName") == "later-dl-g1-1"), 30)
    annotate_retry(custom_objects, namespace, "later", "early")  # nothing failed yet
    wait_for(status_where(custom_objects, namespace, "later", lambda s: s.get("lastHandledRetry") == "early"), 30)
    told = cache_events(core, namespace, "later")
    assert told["RetryIgnored"][0] == "Normal" and "the cache is Pending" in told["RetryIgnored"][1], told
    assert node.run_job_pod(namespace, "later-dl-g1-1", timeout=120).exit_code == 3  # NotFound
    failed = wait_for(status_where(custom_objects, namespace, "later", lambda s: s.get("phase") == "Failed"), 60)
    ready = condition({"status": failed}, "Ready") or {}
    assert ready.get("reason") == "NotFound" and not failed.get("nextRetryTime"), failed
    assert f'kubectl annotate mxcache later {RETRY_ANNOTATION}="$(date +%s)" --overwrite' in ready["message"]

    hub.add("org/later", FILES)  # the cause is fixed
    annotate_retry(custom_objects, namespace, "later", "1")
    retrying = wait_for(
        status_where(custom_objects, namespace, "later", lambda s: s.get("lastHandledRetry") == "1"), 30
    )
    assert retrying["jobName"] == "later-dl-g1-2" and retrying["phase"] == "Pending", retrying
    message = (condition({"status": retrying}, "Ready") or {})["message"]
    assert message == f"attempt 2 (requested by {RETRY_ANNOTATION}): Job later-dl-g1-2", message
    assert node.run_job_pod(namespace, "later-dl-g1-2", timeout=120).exit_code == 0
    evicted = wait_for(status_where(custom_objects, namespace, "later", lambda s: s.get("phase") == "Evicted"), 60)
    assert (
        "download it again with `kubectl annotate mxcache later" in condition({"status": evicted}, "Ready")["message"]
    )
    wait_for(lambda: read_or_none(core.read_namespaced_persistent_volume_claim, "later-cache", namespace) is None, 30)

    annotate_retry(custom_objects, namespace, "later", "1")  # the same value again: already handled
    annotate_retry(custom_objects, namespace, "later", "2")
    again = wait_for(status_where(custom_objects, namespace, "later", lambda s: s.get("lastHandledRetry") == "2"), 30)
    assert again["jobName"] == "later-dl-g1-3", again
    assert read_or_none(core.read_namespaced_persistent_volume_claim, "later-cache", namespace)  # made again
    assert node.run_job_pod(namespace, "later-dl-g1-3", timeout=120).exit_code == 0
    wait_for(
        status_where(custom_objects, namespace, "later",
                     lambda s: s.get("jobName") == "later-dl-g1-3" and s.get("phase") in ("Ready", "Evicted")), 60,
    )  # fmt: skip
    jobs = batch.list_namespaced_job(namespace, label_selector="modelexpress.io/cache=later").items
    assert {j.metadata.name for j in jobs} <= {"later-dl-g1-3"}, jobs  # no attempt twice; evicted ones gone
    generation = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", "later")
    assert generation["metadata"]["generation"] == 1  # never a spec change
    # the operator runs in this process: its metrics count the two retries and the ignored request
    assert retries_counted("retry-requested") - counted["retry-requested"] == 2
    assert retries_counted("retry-ignored") - counted["retry-ignored"] == 1


@pytest.mark.parametrize("cache_operator", [RETRYING], ids=["checks-every-3s"], indirect=True)
def test_a_retry_request_whose_handler_failed_is_answered_by_the_next_check(
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
    hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf never runs an event handler again: when answering the request fails (the API server was
    unreachable a moment), the cache's retry daemon answers it a check later instead of dropping it."""
    from modelexpress_operator.caches import CacheController

    apply_cache(custom_objects, namespace, "dropped", source="hf://org/dropped", storage={"size": "1Gi"})
    assert node.run_job_pod(namespace, "dropped-dl-g1-1", timeout=120).exit_code == 3  # NotFound: final
    wait_for(status_where(custom_objects, namespace, "dropped", lambda s: s.get("phase") == "Failed"), 60)
    calls: list[str] = []
    real = CacheController.requested_retry

    def flaky(self: CacheController, namespace: str, name: str) -> Any:
        calls.append(name)
        if len(calls) == 1:
            raise ConnectionError("the API server went away for a moment")
        return real(self, namespace, name)

    monkeypatch.setattr(CacheController, "requested_retry", flaky)
    hub.add("org/dropped", FILES)
    annotate_retry(custom_objects, namespace, "dropped", "1")
    answered = wait_for(
        status_where(custom_objects, namespace, "dropped", lambda s: s.get("lastHandledRetry") == "1"), 30
    )
    assert answered["jobName"] == "dropped-dl-g1-2" and len(calls) >= 2, (answered, calls)
    assert node.run_job_pod(namespace, "dropped-dl-g1-2", timeout=120).exit_code == 0
    wait_for(status_where(custom_objects, namespace, "dropped", lambda s: s.get("phase") == "Ready"), 60)


def test_missing_secret_is_a_clear_condition_and_credentials_reach_the_job(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
) -> None:
    """The operator cannot read Secrets: a missing one is what the kubelet reports on the Job's pod."""
    apply_cache(
        custom_objects, namespace, "private", source="hf://org/private", storage={"size": "1Gi"},
        credentialsSecretRef={"name": "hf-token"},
    )  # fmt: skip
    batch = client.BatchV1Api(kube_api)
    wait_for(lambda: read_or_none(batch.read_namespaced_job, "private-dl-g1-1", namespace), 30, what="download Job")
    with pytest.raises(ContainerConfigError, match='secret "hf-token" not found'):
        node.run_job_pod(namespace, "private-dl-g1-1", timeout=120, wait=60)
    status = wait_for(
        status_where(
            custom_objects, namespace, "private",
            lambda s: (condition({"status": s}, "Ready") or {}).get("reason") == "SecretNotFound",
        ),
        30,
    )  # fmt: skip
    ready = condition({"status": status}, "Ready")
    assert ready is not None and status["phase"] == "Pending"
    assert "Secret hf-token does not exist in" in ready["message"] and "HF_TOKEN" in ready["message"]
    core = client.CoreV1Api(kube_api)
    told = wait_for(lambda: (e := cache_events(core, namespace, "private")) and "SecretNotFound" in e and e, 30)
    assert told["SecretNotFound"] == ("Warning", ready["message"])
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "hf-token"}, "data": {"HF_TOKEN": base64.b64encode(b"hf_cache_secret").decode()}},
    )
    run = node.run_job_pod(namespace, "private-dl-g1-1", timeout=120, wait=60)  # the kubelet's retry
    assert run.exit_code == 0, run.stderr[-2000:]
    status = wait_for(status_where(custom_objects, namespace, "private", lambda s: s.get("phase") == "Ready"), 60)
    assert "hf_cache_secret" not in str(status) + run.stdout + run.stderr
    job = batch.read_namespaced_job("private-dl-g1-1", namespace)
    assert job.spec.template.spec.containers[0].env_from[0].secret_ref.name == "hf-token"


def test_private_model_is_sized_by_a_job_with_the_credentials_and_keeps_each_failures_reason(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
    hub: FakeHub,
) -> None:
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    # No credentials: the hub refuses the operator, and the cache says so (not "size unknown").
    apply_cache(custom_objects, namespace, "anon", source="hf://org/private")
    status = wait_for(status_where(custom_objects, namespace, "anon", lambda s: s.get("phase") == "Failed"), 30)
    ready = condition({"status": status}, "Ready") or {}
    assert ready.get("reason") == "Unauthorized" and "credentialsSecretRef" in ready["message"], ready
    assert read_or_none(core.read_namespaced_persistent_volume_claim, "anon-cache", namespace) is None

    # With credentials and no size: a sizing Job reads the size with them; the operator never reads the Secret.
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "hf-token"}, "data": {"HF_TOKEN": base64.b64encode(b"hf_cache_secret").decode()}},
    )
    apply_cache(
        custom_objects, namespace, "sized", source="hf://org/private", credentialsSecretRef={"name": "hf-token"}
    )
    status = wait_for(status_where(custom_objects, namespace, "sized", lambda s: s.get("jobName")), 30)
    assert (
        status["jobName"] == "sized-size-g1-1" and (condition({"status": status}, "Ready") or {})["reason"] == "Sizing"
    )
    job = batch.read_namespaced_job("sized-size-g1-1", namespace)
    pod_spec = job.spec.template.spec
    assert pod_spec.containers[0].args[:2] == ["cache", "size"] and pod_spec.automount_service_account_token is False
    assert not any(v.persistent_volume_claim for v in pod_spec.volumes or [])
    assert read_or_none(core.read_namespaced_persistent_volume_claim, "sized-cache", namespace) is None
    run = node.run_job_pod(namespace, "sized-size-g1-1", timeout=120)
    assert run.exit_code == 0, run.stderr[-2000:]
    pvc = wait_for(
        lambda: read_or_none(core.read_namespaced_persistent_volume_claim, "sized-cache", namespace), 30, what="PVC"
    )
    assert pvc.spec.resources.requests["storage"] == "1Gi"  # 2 bytes + headroom -> the 1 GiB floor
    status = wait_for(
        status_where(custom_objects, namespace, "sized", lambda s: "-dl-" in (s.get("jobName") or "")), 30
    )
    assert status["sourceBytes"] == 2 and status["jobName"] == "sized-dl-g1-1"
    run = node.run_job_pod(namespace, "sized-dl-g1-1", timeout=120)
    assert run.exit_code == 0, run.stderr[-2000:]
    wait_for(status_where(custom_objects, namespace, "sized", lambda s: s.get("phase") == "Ready"), 60)

    # Wrong credentials: the sizing Job finds out, and the cache fails with that reason, at once.
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "wrong"}, "data": {"HF_TOKEN": base64.b64encode(b"hf_wrong").decode()}}
    )
    apply_cache(custom_objects, namespace, "wrong", source="hf://org/private", credentialsSecretRef={"name": "wrong"})
    run = node.run_job_pod(namespace, "wrong-size-g1-1", timeout=120, wait=30)
    assert run.exit_code == 4
    status = wait_for(status_where(custom_objects, namespace, "wrong", lambda s: s.get("phase") == "Failed"), 60)
    ready = condition({"status": status}, "Ready") or {}
    assert ready.get("reason") == "Unauthorized" and "hf://org/private" in ready["message"], ready
    assert "hf_wrong" not in str(status) + run.stdout + run.stderr
    assert read_or_none(core.read_namespaced_persistent_volume_claim, "wrong-cache", namespace) is None


def test_unused_cache_is_evicted_and_pinned_one_stays(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    node: NodeHelper,
    cache_operator: Any,
) -> None:
    core = client.CoreV1Api(kube_api)
    for name, pinned in (("idle", False), ("keep", True), ("busy", False)):
        apply_cache(
            custom_objects, namespace, name, source="hf://org/tiny", storage={"size": "1Gi"},
            eviction={"unusedThreshold": "2s", "pinned": pinned},
        )  # fmt: skip
        assert node.run_job_pod(namespace, f"{name}-dl-g1-1", timeout=120).exit_code == 0
    # A running worker mounts "busy": it is in use however old its lastUsedTime is.
    core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "reader"},
         "spec": {"containers": [{"name": "vllm", "image": "vllm"}],
                  "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "busy-cache", "readOnly": True}}]}},
    )  # fmt: skip
    node.mark_running(namespace, "reader")
    wait_for(status_where(custom_objects, namespace, "keep", lambda s: s.get("phase") == "Ready"), 60)
    first_use = wait_for(status_where(custom_objects, namespace, "busy", lambda s: s.get("phase") == "Ready"), 60)
    refreshed = wait_for(
        status_where(custom_objects, namespace, "busy",
                     lambda s: s.get("lastUsedTime", "") > first_use["lastUsedTime"]), 30, what="use recorded",
    )  # fmt: skip
    assert refreshed["phase"] == "Ready"
    status = wait_for(status_where(custom_objects, namespace, "idle", lambda s: s.get("phase") == "Evicted"), 60)
    ready = condition({"status": status}, "Ready")
    assert ready is not None and ready["reason"] == "Evicted" and "unusedThreshold 2s" in ready["message"]
    wait_for(
        lambda: read_or_none(core.read_namespaced_persistent_volume_claim, "idle-cache", namespace) is None,
        30,
        what="PVC gone",
    )
    assert cache_status(custom_objects, namespace, "keep")["phase"] == "Ready"  # pinned: never evicted
    assert read_or_none(core.read_namespaced_persistent_volume_claim, "keep-cache", namespace)
    assert cache_status(custom_objects, namespace, "busy")["phase"] == "Ready"  # in use: never evicted
    assert read_or_none(core.read_namespaced_persistent_volume_claim, "busy-cache", namespace)


def test_a_refused_child_object_is_a_condition_with_the_api_servers_reason(
    kube_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    cache_operator: Any,
) -> None:
    """A ResourceQuota that allows no PVC: the API server's 403 becomes the cache's condition and Event
    (not a traceback in the operator's log); once the quota is gone, the retry creates the PVC."""
    core = client.CoreV1Api(kube_api)
    enforce_quota(core, namespace, "no-claims", {"persistentvolumeclaims": "0"})
    apply_cache(custom_objects, namespace, "quota", source="hf://org/tiny", storage={"size": "1Gi"})
    status = wait_for(status_where(custom_objects, namespace, "quota", lambda s: bool(s.get("conditions"))), 30)
    ready = condition({"status": status}, "Ready") or {}
    assert status["phase"] == "Pending" and ready.get("reason") == "Forbidden", ready
    assert "creating PersistentVolumeClaim quota-cache was refused" in ready["message"]
    assert "exceeded quota" in ready["message"] and "no-claims" in ready["message"]
    told = wait_for(lambda: (e := cache_events(core, namespace, "quota")) and "Forbidden" in e and e, 30, what="Event")
    assert told["Forbidden"][1] == ready["message"]
    core.delete_namespaced_resource_quota("no-claims", namespace)
    wait_for(
        lambda: read_or_none(core.read_namespaced_persistent_volume_claim, "quota-cache", namespace), 60, what="PVC"
    )
