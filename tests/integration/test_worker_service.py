"""WorkerService over real gRPC on loopback: manifest paging, agent metadata, status stream, health."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelexpress.p2p.client import SourceUnavailableError, WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.service import SERVICE_NAME, WorkerInfo, WorkerServer
from tests.helpers.manifests import build_manifest

IDENTITY = WorkerIdentity(model_name="org/model")


def _health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = reply.status
        return status


def test_status_stream_health_and_manifest() -> None:
    server = WorkerServer(WorkerInfo(agent_name="agent-x", endpoint="e"), "127.0.0.1", 0)
    assert server.port > 0  # port 0 picked a free one
    server.start()
    client = WorkerClient(f"127.0.0.1:{server.port}", timeout=5)
    try:
        with pytest.raises(SourceUnavailableError, match="UNAVAILABLE"):
            client.manifest()
        assert _health(server.port, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        seen: list[str] = []
        ended = threading.Event()
        client.watch(lambda s: seen.append(str(s.state)), lambda _reason: ended.set())
        layout = allocate_pool([TensorSpec(f"t{i}", "float32", (i,)) for i in range(10_000)])
        manifest = build_manifest(IDENTITY, layout)
        server.publish(manifest, b"agent-metadata-bytes")
        server.set_state("Ready")
        assert client.manifest(page_size=512) == manifest
        meta = client.agent_metadata()
        assert (meta.agent_name, meta.metadata) == ("agent-x", b"agent-metadata-bytes")
        assert _health(server.port, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
        assert client.status().tensor_count == 10_000
        server.set_state("Draining")
    finally:
        server.stop(grace=1)
    assert ended.wait(10), "the status stream did not end when the worker stopped"
    assert seen[:3] == ["1", "2", "3"]  # Initializing, Ready, Draining
    client.close()


def test_heartbeats_and_puller_streams_count_as_active_transfers() -> None:
    from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc

    server = WorkerServer(WorkerInfo(agent_name="agent-y", pod_uid="uid-7"), "127.0.0.1", 0)
    server.start()
    server.publish(build_manifest(IDENTITY, allocate_pool([TensorSpec("w", "float32", (4,))])), b"meta")
    server.set_state("Ready")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = worker_pb2_grpc.WorkerServiceStub(channel)
    try:
        # An observer asking for 100 ms heartbeats hears from a worker whose state never changes.
        observer = stub.WatchStatus(worker_pb2.WatchStatusRequest(heartbeat_ms=100), timeout=10)
        first = next(observer)
        assert (first.state, first.pod_uid, first.active_transfers) == (worker_pb2.WORKER_STATE_READY, "uid-7", 0)
        beats = [next(observer) for _ in range(3)]
        assert all(b.state == worker_pb2.WORKER_STATE_READY for b in beats)
        # Two targets start pulling (their streams are marked puller): the observer sees the load.
        pullers = [stub.WatchStatus(worker_pb2.WatchStatusRequest(puller=True), timeout=10) for _ in range(2)]
        for stream in pullers:
            next(stream)
        assert _next_where(observer, lambda s: s.active_transfers == 2)
        pullers[0].cancel()
        assert _next_where(observer, lambda s: s.active_transfers == 1)
        observer.cancel()
        pullers[1].cancel()
    finally:
        channel.close()
        server.stop(grace=1)


def _next_where(stream: object, check: object) -> bool:
    for _ in range(50):
        status = next(stream)  # type: ignore[call-overload]
        if check(status):  # type: ignore[operator]
            return True
    return False
