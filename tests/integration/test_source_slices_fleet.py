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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
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
from tests.harness.kube import recorded_slices, recorded_sources

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
    """Every rank recorded once, in slices of at most 100 entries of one rank; the largest object's size."""
    pieces = recorded_slices(custom, namespace, name)
    entries = [s for piece in pieces for s in piece["status"]["sources"]]
    assert len(entries) == RANKS and len({(s["podUid"], s["endpoint"]) for s in entries}) == RANKS
    per_rank = -(-RANKS // TP // 100)  # 1,250 entries of each rank: 13 slices
    assert len(pieces) == TP * per_rank and all(len(p["status"]["sources"]) <= 100 for p in pieces)
    for piece in pieces:
        rank = piece["spec"]["rank"]
        assert piece["metadata"]["labels"]["modelexpress.io/rank"] == str(rank)
        assert {s["rank"] for s in piece["status"]["sources"]} == {rank}
    assert all(p["status"]["sourceCount"] == len(p["status"]["sources"]) for p in pieces)
    metadata = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", name)
    largest = max(len(json.dumps(obj)) for obj in [*pieces, metadata])
    print(f"\n{RANKS} ranks in {len(pieces)} slices; largest object {largest} bytes (ModelMetadata "
          f"{len(json.dumps(metadata))})")  # fmt: skip
    return largest


@dataclass
class _Fleet:
    """The test's model: its recorder, its simulated workers, and the API to read what was written."""

    recorder: Recorder
    custom: client.CustomObjectsApi
    namespace: str
    identity: WorkerIdentity
    targets: list[WorkerTarget]
    ranks: list[WorkerIdentity]

    @property
    def name(self) -> str:
        return self.identity.resource_name()

    async def report(self, index: int, state: int, load: int = 0) -> None:
        await self.recorder.observe(self.targets[index], _status(self.ranks[index], index // TP, state, load))

    async def report_all(self, state: int) -> None:
        await asyncio.gather(*(self.report(i, state) for i in range(RANKS)))

    def summary(self, key: str, value: int) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "modelmetadatas", self.name)
        except client.ApiException:
            return None
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get(key) == value else None

    def entries(self) -> list[dict[str, Any]]:
        return recorded_sources(self.custom, self.namespace, self.name)

    async def writes_of(self, change: Coroutine[Any, Any, None], done: Callable[[], Any], what: str) -> int:
        """API writes the recorder made for `change`, once `done` holds."""
        before = self.recorder.writes
        await change
        await _settle(done, what)
        await asyncio.sleep(0.3)  # nothing more should follow
        return self.recorder.writes - before


async def _settle(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 120
    while not (found := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return found


async def _record_and_change(fleet: _Fleet) -> None:
    for state in (worker_pb2.WORKER_STATE_INITIALIZING, worker_pb2.WORKER_STATE_READY):
        await fleet.report_all(state)
    status = await _settle(lambda: fleet.summary("readySources", RANKS), "every rank Ready in the summary")
    assert status["readyReplicas"] == RANKS // TP and status["nodeCount"] == NODES and len(status["nodes"]) == 100
    assert "sources" not in status
    largest = await asyncio.to_thread(_check_slices, fleet.custom, fleet.namespace, fleet.name)
    assert largest < 200_000, f"largest object {largest} bytes"

    # A target of rank 3 is handed exactly the Ready rank-3 entries, from the slices of its identity.
    registry = KubernetesRegistry(fleet.namespace, fleet.recorder.api)
    try:
        found = await asyncio.to_thread(registry.find_ready, fleet.identity.model_copy(update={"rank": 3}))
    finally:
        registry.close()
    assert len(found) == RANKS // TP and {r.identity.rank for r in found} == {3}

    # One worker's load changes: its slice is written, nothing else (the summary is unchanged).
    target = fleet.targets[4321]

    def loaded() -> bool:
        return any(s["podUid"] == target.uid and s["endpoint"].endswith(f":{target.port}") and s["activeTransfers"] == 3
                   for s in fleet.entries())  # fmt: skip

    writes = await fleet.writes_of(fleet.report(4321, worker_pb2.WORKER_STATE_READY, 3), loaded, "the loaded entry")
    assert writes == 1, f"a load change wrote {writes} objects"
    # One worker drains: its slice and the summary (one Ready source fewer).
    drained = fleet.report(7, worker_pb2.WORKER_STATE_DRAINING)
    writes = await fleet.writes_of(drained, lambda: fleet.summary("readySources", RANKS - 1), "the drain counted")
    assert writes == 2, f"a worker draining wrote {writes} objects (its slice and the summary)"


async def _shrink(fleet: _Fleet) -> None:
    """The fleet shrinks to a fifth, about 20 entries left in each slice: each rank's 250 are merged into 3
    slices (100, 100, 50)."""
    for i, target in enumerate(fleet.targets):
        if i % 100 >= 20:
            fleet.recorder.forget_target(target)

    def merged() -> list[dict[str, Any]] | None:
        pieces = recorded_slices(fleet.custom, fleet.namespace, fleet.name)
        return pieces if len(pieces) == 3 * TP else None

    pieces = await _settle(merged, "the sparse slices merged")
    kept = [s for piece in pieces for s in piece["status"]["sources"]]
    assert len(kept) == RANKS // 5 and len({(s["podUid"], s["endpoint"]) for s in kept}) == RANKS // 5
    sizes: dict[int, list[int]] = {}
    for piece in pieces:
        assert {s["rank"] for s in piece["status"]["sources"]} == {piece["spec"]["rank"]}
        sizes.setdefault(piece["spec"]["rank"], []).append(len(piece["status"]["sources"]))
    assert {rank: sorted(found) for rank, found in sizes.items()} == {rank: [50, 100, 100] for rank in range(TP)}


def test_ten_thousand_ranks_in_bounded_slices_one_change_one_slice_and_a_shrunk_fleet_merged(
    kube_api: client.ApiClient, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    identity = WorkerIdentity(model_name="test/fleet-10k", tensor_parallel_size=TP)
    targets, ranks = _fleet(namespace, identity)
    refused_before = _refused()

    async def run() -> None:
        recorder = Recorder(kube_api, OperatorSettings(), _Leader())
        fleet = _Fleet(recorder, custom_objects, namespace, identity, targets, ranks)
        try:
            await _record_and_change(fleet)
            await _shrink(fleet)
        finally:
            await recorder.close()

    asyncio.run(run())
    assert _refused() == refused_before  # no write was refused
