"""Pure logic of source recording and discovery: opt-in annotations, leader rule, source ordering, identity labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelexpress.api import ModelSourceSlice, SourceState, WorkerSource
from modelexpress.api.modelmetadata import IDENTITY_LABEL, ModelIdentity
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.registry.kubernetes import sources_for
from modelexpress.registry.ranking import Placement
from modelexpress_operator.leadership import is_leader
from modelexpress_operator.workers import AnnotationError, pod_targets, same_entry


def pod(annotations: dict[str, str], ready: bool = True, ip: str | None = "10.0.0.5", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "vllm-0", "namespace": "ns", "uid": "uid-1", "annotations": annotations, **meta},
        "spec": {"nodeName": "gpu-1"},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pod_targets_follow_only_opted_in_ready_addressable_pods() -> None:
    opted = {"modelexpress.io/p2p": "enabled"}
    [target] = pod_targets(pod(opted), 50051)
    assert (target.endpoint, target.node, target.key) == ("10.0.0.5:50051", "gpu-1", "uid-1:50051")
    assert pod_targets(pod({}), 50051) == []
    assert pod_targets(pod({"modelexpress.io/p2p": "disabled"}), 50051) == []
    assert pod_targets(pod(opted, ready=False), 50051) == []
    assert pod_targets(pod(opted, ip=None), 50051) == []
    assert pod_targets(pod(opted, deletionTimestamp="2026-01-01T00:00:00Z"), 50051) == []


def test_pod_targets_one_worker_per_rank_on_consecutive_ports() -> None:
    annotations = {
        "modelexpress.io/p2p": "true",
        "modelexpress.io/worker-port": "6000",
        "modelexpress.io/ranks-per-pod": "8",
        "modelexpress.io/model-metadata": "llama-70b",
    }
    targets = pod_targets(pod(annotations, ip="fd00::5"), 50051)
    assert [t.port for t in targets] == list(range(6000, 6008))
    assert targets[0].endpoint == "[fd00::5]:6000"
    assert {t.metadata_name for t in targets} == {"llama-70b"}


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"modelexpress.io/worker-port": "http"}, "modelexpress.io/worker-port='http' is not an integer"),
        ({"modelexpress.io/worker-port": "70000"}, "out of range"),
        ({"modelexpress.io/ranks-per-pod": "0"}, "modelexpress.io/ranks-per-pod='0' is out of range"),
        ({"modelexpress.io/worker-port": "65535", "modelexpress.io/ranks-per-pod": "2"}, "past port 65535"),
    ],
)
def test_unusable_annotations_name_the_annotation(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(")):
        pod_targets(pod({"modelexpress.io/p2p": "enabled", **annotations}), 50051)


def test_leader_rule_matches_kopf_peering() -> None:
    now = datetime.now(UTC)
    alive = {"lastseen": now.isoformat(), "lifetime": 60}
    dead = {"lastseen": (now - timedelta(seconds=120)).isoformat(), "lifetime": 60}
    assert is_leader({"me": {**alive, "priority": 200}, "other": {**alive, "priority": 100}}, 200, now)
    assert not is_leader({"me": {**alive, "priority": 100}, "other": {**alive, "priority": 200}}, 100, now)
    assert is_leader({"me": {**alive, "priority": 100}, "other": {**dead, "priority": 200}}, 100, now)
    assert not is_leader(
        {"me": {**alive, "priority": 5}, "twin": {**alive, "priority": 5}}, 5, now
    )  # a tie freezes both
    assert is_leader({}, 5, now)


def _resource(name: str, spec: dict[str, Any], sources: list[dict[str, Any]]) -> ModelSourceSlice:
    """A slice of ModelMetadata `name` (of `spec`'s identity) holding `sources`, labelled as the operator does."""
    labels = {IDENTITY_LABEL: ModelIdentity.model_validate(spec).identity_hash()}
    return ModelSourceSlice.model_validate(
        {"metadata": {"name": f"{name}-s0", "labels": labels}, "spec": {"modelMetadata": name},
         "status": {"sources": sources}}
    )  # fmt: skip


def _source(pod: str, **fields: Any) -> dict[str, Any]:
    return {"pod": pod, "podUid": f"uid-{pod}", "rank": 0, "endpoint": f"{pod}:1", "state": "Ready", **fields}


def test_sources_for_filters_identity_rank_state_and_architecture_and_orders_by_node_then_load() -> None:
    spec = {"modelName": "org/m", "tensorParallelSize": 2}
    resources = [
        _resource(
            "m",
            spec,
            [
                _source("busy-remote", activeTransfers=0, node="n2", rank=1),
                _source("idle-remote", activeTransfers=0, node="n2"),
                _source("loaded-remote", activeTransfers=3, node="n2"),
                _source("loaded-local", activeTransfers=5, node="n1"),
                _source("stale", state="Stale", node="n1"),
                _source("other-arch", gpuArchitecture="sm_80", node="n1"),
            ],
        ),
        _resource("other-identity", {"modelName": "org/m", "tensorParallelSize": 4}, [_source("tp4", node="n1")]),
    ]
    found = sources_for(
        resources, WorkerIdentity(model_name="org/m", tensor_parallel_size=2, rank=0), Placement(node="n1")
    )
    assert [r.worker_id for r in found] == ["loaded-local/0", "idle-remote/0", "loaded-remote/0"]
    assert found[0].pod_uid == "uid-loaded-local"
    sm80 = sources_for(
        resources, WorkerIdentity(model_name="org/m", tensor_parallel_size=2, gpu_architecture="sm_80"), None
    )
    assert [r.worker_id for r in sm80] == ["other-arch/0"]


def test_identity_hash_ignores_architecture_and_rank_but_not_layout() -> None:
    base = ModelIdentity(model_name="org/m", tensor_parallel_size=8)
    assert (
        base.identity_hash()
        == ModelIdentity(model_name="org/m", tensor_parallel_size=8, gpu_architecture="sm_90").identity_hash()
    )
    assert (
        base.identity_hash()
        == ModelIdentity.of(WorkerIdentity(model_name="org/m", tensor_parallel_size=8, rank=5)).identity_hash()
    )
    assert base.identity_hash() != ModelIdentity(model_name="org/m", tensor_parallel_size=4).identity_hash()
    labels = ModelIdentity(model_name="meta-llama/Llama-3.1-8B-Instruct", revision="refs/pr/1").labels()
    assert labels["modelexpress.io/model"] == "meta-llama.Llama-3.1-8B-Instruct"
    assert labels["modelexpress.io/revision"] == "refs.pr.1"
    assert all(len(v) <= 63 for v in labels.values())


def test_an_entry_in_two_slices_while_they_are_merged_is_handed_out_once() -> None:
    spec = {"modelName": "org/m"}
    moved = _source("moved", node="n1")
    first, second = _resource("m", spec, [moved, _source("other", node="n2")]), _resource("m", spec, [moved])
    second.metadata["name"] = "m-s1"
    found = sources_for([first, second], WorkerIdentity(model_name="org/m"), Placement(node="n1"))
    assert [r.worker_id for r in found] == ["moved/0", "other/0"]


def test_an_unchanged_heartbeat_is_the_same_entry_and_any_other_change_is_not() -> None:
    then = datetime(2026, 12, 7, tzinfo=UTC)
    entry = WorkerSource(
        pod="p", pod_uid="u", rank=0, endpoint="10.0.0.1:50051", state=SourceState.READY, updated_at=then
    )
    assert same_entry(entry, entry.model_copy(update={"updated_at": then + timedelta(seconds=5)}))
    for change in ({"state": SourceState.STALE}, {"active_transfers": 1}, {"zone": "z"}, {"weights_version": "2"}):
        assert not same_entry(entry, entry.model_copy(update=change)), change
