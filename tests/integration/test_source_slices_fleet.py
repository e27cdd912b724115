"""10,000 ranks of one model recorded in ModelSourceSlices on a real control plane.

The operator's `Recorder` runs in the test's event loop and writes through the real `kubernetes`
client to a real API server. The workers are simulated the way the operator sees them: each is a
WorkerService status message handed to `Recorder.observe`, as its status-stream task would hand it
(10,000 gRPC servers do not fit on this machine; test_modelmetadata_sources.py runs the kopf operator
against real WorkerServices). Before slices, 4,000 entries in one object were refused by etcd.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.registry.kubernetes import KubernetesRegistry
from modelexpress_operator.recorder import Recorder
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.workers import WorkerTarget
from tests.harness.fixtures import GROUP, VERSION

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]
RANKS, TP, NODES = 10_000, 8, 500


class _Leader:
    active = True


def _status(identity: WorkerIdentity, pod: int, state: int, load: int = 0) -> worker_pb2.WorkerStatus:
    return worker_pb2.WorkerStatus(
        state=state, identity=identity.to_proto(), agent_name=f"mx-{pod}-{identity.rank}", tensor_count=291,
        total_bytes=2_008_000_000, instance=f"w-{pod:05d}", node_name=f"node-{pod % NODES:03d}",
        active_transfers=load,
    )  # fmt: skip


def _refused() -> float:
    return REGISTRY.get_sample_value("modelexpress_operator_errors_total", {"where": "status-write"}) or 0.0


def _fleet(namespace: str, identity: WorkerIdentity) -> tuple[list[WorkerTarget], list[WorkerIdentity]]:
    """RANKS workers: TP ranks per pod, pods spread over NODES nodes."""
    targets = []
    for i in range(RANKS):
        pod = i // TP
        address = f"10.0.{pod // 256}.{pod % 256}"
        targets.append(WorkerTarget(namespace, f"w-{pod:05d}", f"uid-{pod}", f"node-{pod % NODES:03d}", address,
                                    50051 + i % TP))  # fmt: skip
    return targets, [identity.model_copy(update={"rank": i % TP}) for i in range(RANKS)]


def _check_slices(custom: client.CustomObjectsApi, namespace: str, name: str) -> int:
    """Every rank recorded once, in slices of at most 100; the largest object's size in bytes."""
    pieces = _slices(custom, namespace, name)
    entries = [s for piece in pieces for s in piece["status"]["sources"]]
    assert len(entries) == RANKS and len({(s["podUid"], s["endpoint"]) for s in entries}) == RANKS
    assert len(pieces) == RANKS // 100 and all(len(p["status"]["sources"]) <= 100 for p in pieces)
    assert all(p["status"]["sourceCount"] == len(p["status"]["sources"]) for p in pieces)
    metadata = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", name)
    largest = max(len(json.dumps(obj)) for obj in [*pieces, metadata])
    print(f"\n{RANKS} ranks in {len(pieces)} slices; largest object {largest} bytes (ModelMetadata "
          f"{len(json.dumps(metadata))})")  # fmt: skip
    return largest


def _slices(custom: client.CustomObjectsApi, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"modelexpress.io/model-metadata={name}"
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelsourceslices", label_selector=selector
    )["items"]
    return items


def test_ten_thousand_ranks_are_recorded_in_bounded_slices_and_one_change_writes_one_slice(
    kube_api: client.ApiClient, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    identity = WorkerIdentity(model_name="test/fleet-10k", tensor_parallel_size=TP)
    name = identity.resource_name()
    targets, ranks = _fleet(namespace, identity)
    refused_before = _refused()

    def summary(key: str, value: int) -> dict[str, Any] | None:
        try:
            obj = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", name)
        except client.ApiException:
            return None
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get(key) == value else None

    async def settle(check: Any, what: str) -> Any:
        deadline = time.monotonic() + 120
        while not (found := await asyncio.to_thread(check)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)
        return found

    async def run() -> tuple[dict[str, Any], int, int]:
        recorder = Recorder(kube_api, OperatorSettings(), _Leader())
        try:
            for state in (worker_pb2.WORKER_STATE_INITIALIZING, worker_pb2.WORKER_STATE_READY):
                await asyncio.gather(*(recorder.observe(t, _status(r, i // TP, state))
                                       for i, (t, r) in enumerate(zip(targets, ranks, strict=True))))  # fmt: skip
            status = await settle(lambda: summary("readySources", RANKS), "every rank Ready in the summary")
            await asyncio.sleep(0.5)

            # One worker's load changes: its slice is written, nothing else (the summary is unchanged).
            before = recorder.writes
            await recorder.observe(targets[4321], _status(ranks[4321], 4321 // TP, worker_pb2.WORKER_STATE_READY, 3))

            def loaded() -> bool:
                return any(s["podUid"] == targets[4321].uid and s["endpoint"].endswith(f":{targets[4321].port}")
                           and s["activeTransfers"] == 3
                           for piece in _slices(custom_objects, namespace, name) for s in piece["status"]["sources"])  # fmt: skip

            await settle(loaded, "the loaded worker's entry")
            one_change = recorder.writes - before

            # One worker drains: its slice and the summary (one Ready source fewer).
            before = recorder.writes
            await recorder.observe(targets[7], _status(ranks[7], 0, worker_pb2.WORKER_STATE_DRAINING))
            await settle(lambda: summary("readySources", RANKS - 1), "the drained worker counted")
            return status, one_change, recorder.writes - before
        finally:
            await recorder.close()

    status, one_change, drained = asyncio.run(run())
    assert one_change == 1, f"a load change wrote {one_change} objects"
    assert drained == 2, f"a worker draining wrote {drained} objects (its slice and the summary)"
    assert _refused() == refused_before  # no write was refused

    largest = _check_slices(custom_objects, namespace, name)
    assert largest < 200_000, f"largest object {largest} bytes"
    assert status["readyReplicas"] == RANKS // TP and status["nodeCount"] == NODES and len(status["nodes"]) == 100
    assert "sources" not in status

    # A target of rank 3 is handed exactly the Ready rank-3 entries, from the slices of its identity.
    registry = KubernetesRegistry(namespace, kube_api)
    try:
        found = registry.find_ready(identity.model_copy(update={"rank": 3}))
    finally:
        registry.close()
    assert len(found) == RANKS // TP and {r.identity.rank for r in found} == {3}
