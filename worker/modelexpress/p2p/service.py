"""WorkerService over gRPC: a worker's manifest, its NIXL agent metadata, its status stream, and health.

Binds to `MX_WORKER_HOST`/`MX_WORKER_GRPC_PORT` (port 0 picks a free one). The status stream sends
the current state at once and then every change (Initializing -> Ready -> Draining), so the operator
learns the moment a worker goes away: the stream breaks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelexpress import metrics
from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc
from modelexpress.artifacts.store import ArtifactStore
from modelexpress.listening import bind_port
from modelexpress.p2p.access import AccessInterceptor, PeerAccess
from modelexpress.p2p.manifest import DEFAULT_PAGE_SIZE, Manifest

log = logging.getLogger(__name__)
SERVICE_NAME = "modelexpress.worker.v1.WorkerService"
STATES = {
    "Initializing": worker_pb2.WORKER_STATE_INITIALIZING,
    "Ready": worker_pb2.WORKER_STATE_READY,
    "Draining": worker_pb2.WORKER_STATE_DRAINING,
}


@dataclass(frozen=True)
class WorkerInfo:
    """What the status stream reports besides the state."""

    agent_name: str
    endpoint: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    pod_namespace: str = ""
    node_name: str = ""
    instance: str = ""


@dataclass
class _Status:
    state: str = "Initializing"
    message: str = ""
    updated: float = field(default_factory=time.time)
    version: int = 0


class _Servicer(worker_pb2_grpc.WorkerServiceServicer):  # type: ignore[misc]
    def __init__(self, worker: WorkerServer) -> None:
        self._worker = worker

    def GetManifest(  # noqa: N802 - gRPC method name
        self, request: worker_pb2.GetManifestRequest, context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.ManifestChunk]:
        manifest = self._worker.manifest
        if manifest is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the worker has not loaded its tensors yet")
        if request.page_size in (0, DEFAULT_PAGE_SIZE):
            yield from self._worker.encoded_manifest  # encoded once, served to every target
        else:
            yield from manifest.to_chunks(request.page_size)

    def GetAgentMetadata(  # noqa: N802
        self, request: worker_pb2.GetAgentMetadataRequest, context: grpc.ServicerContext
    ) -> worker_pb2.AgentMetadata:
        w = self._worker
        if w.agent_metadata is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the worker has not registered its memory yet")
        w.last_metadata_request = time.monotonic()
        return worker_pb2.AgentMetadata(agent_name=w.info.agent_name, metadata=w.agent_metadata, backend=w.backend)

    def GetArtifacts(  # noqa: N802
        self, request: worker_pb2.GetArtifactsRequest, context: grpc.ServicerContext
    ) -> worker_pb2.ArtifactManifest:
        store = self._worker.artifacts
        if store is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, self._worker.artifacts_pending)
        return store.manifest.to_proto()

    def ReadArtifact(  # noqa: N802
        self, request: worker_pb2.ReadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.ArtifactChunk]:
        store = self._worker.artifacts
        if store is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, self._worker.artifacts_pending)
        try:
            chunks = store.read(request.root, request.path, request.offset, request.length)
            for offset, data in chunks:
                metrics.SERVED_ARTIFACT_BYTES.inc(len(data))
                yield worker_pb2.ArtifactChunk(offset=offset, data=data)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        except OSError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.path} cannot be read here: {exc.strerror}")
        except ValueError as exc:  # replaced by a link out of its cache since it was listed
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def WatchStatus(  # noqa: N802
        self, request: worker_pb2.WatchStatusRequest, context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.WorkerStatus]:
        heartbeat = request.heartbeat_ms / 1000 if request.heartbeat_ms else None
        if request.puller and not self._worker.admit_puller():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._worker.busy_message())
        try:
            seen, sent = -1, 0.0
            while context.is_active():
                wait = 1.0 if heartbeat is None else max(0.05, min(1.0, sent + heartbeat - time.monotonic()))
                status = self._worker.wait_for_change(seen, timeout=wait)
                due = heartbeat is not None and time.monotonic() - sent >= heartbeat
                if status.version != seen or due:
                    seen, sent = status.version, time.monotonic()
                    yield self._worker.status_message(status)
                if self._worker.stopping:
                    return
        finally:
            if request.puller:
                self._worker.count_puller(-1)


class WorkerServer:
    """The gRPC server of one worker rank."""

    def __init__(
        self,
        info: WorkerInfo,
        host: str = "0.0.0.0",
        port: int = 0,
        backend: str = "UCX",
        access: PeerAccess | None = None,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.info = info
        self.backend = backend
        self.manifest: Manifest | None = None
        self.encoded_manifest: list[worker_pb2.ManifestChunk] = []
        self.agent_metadata: bytes | None = None
        self.artifacts: ArtifactStore | None = None
        self.artifacts_pending = "this worker serves no compiled artifacts"
        """Why `artifacts` is None, as targets are told (e.g. its engine is still compiling)."""
        self.stopping = False
        self.active_transfers = 0
        self.max_pullers = 0
        """Targets served at once (0: any number); more are refused as busy."""
        self.peak_pullers = 0
        self.refused_pullers = 0
        self.last_metadata_request = float("-inf")
        self._status = _Status()
        self._changed = threading.Condition()
        self._health = health.HealthServicer()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="mx-worker-grpc"),
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)],  # bind exclusively
            interceptors=[AccessInterceptor(access, (SERVICE_NAME,))] if access is not None else None,
        )
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(_Servicer(self), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        address = f"{host}:{port}"
        if tls is not None:  # (certificate chain, private key), PEM
            credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
            self.port = bind_port(
                lambda: self._server.add_secure_port(address, credentials), address, "the WorkerService"
            )
        else:
            self.port = bind_port(lambda: self._server.add_insecure_port(address), address, "the WorkerService")
        self.tls = tls is not None
        self.host = host
        self._set_health()

    @property
    def state(self) -> str:
        return self._status.state

    def start(self) -> None:
        self._server.start()
        log.info("WorkerService listening on %s:%d (%s)", self.host, self.port,
                 "TLS" if self.tls else "plaintext: MX_WORKER_TLS_CERT_FILE unset")  # fmt: skip

    def publish(self, manifest: Manifest, agent_metadata: bytes) -> None:
        self.encoded_manifest = list(manifest.to_chunks(DEFAULT_PAGE_SIZE))
        self.manifest, self.agent_metadata = manifest, agent_metadata

    def publish_artifacts(self, store: ArtifactStore) -> None:
        self.artifacts = store
        log.info(
            "serving %d compiled artifact file(s), %d bytes", len(store.manifest.files), store.manifest.total_bytes
        )

    def set_state(self, state: str, message: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"unknown worker state {state!r}")
        with self._changed:
            self._status = _Status(state, message, time.time(), self._status.version + 1)
            self._changed.notify_all()
        self._set_health()
        log.info("worker state %s%s", state, f": {message}" if message else "")

    def admit_puller(self) -> bool:
        """Count a new target unless `max_pullers` are being served already (then it is refused)."""
        with self._changed:
            if self.max_pullers and self.active_transfers >= self.max_pullers:
                self.refused_pullers += 1
                metrics.REFUSED_PULLERS.inc()
                log.info("a target was refused: %s", self.busy_message())
                return False
            self.count_puller(+1)  # under the same (re-entrant) lock: two targets never both take the last place
        return True

    def busy_message(self) -> str:
        return (
            f"busy: serving {self.active_transfers} target(s) (MX_MAX_PULLERS={self.max_pullers}); try another source"
        )

    def count_puller(self, delta: int) -> None:
        """A target opened (+1) or closed (-1) its status stream: watchers learn the new load."""
        with self._changed:
            self.active_transfers = max(0, self.active_transfers + delta)
            self.peak_pullers = max(self.peak_pullers, self.active_transfers)
            self._status = replace(self._status, version=self._status.version + 1)
            self._changed.notify_all()

    def peers_expected(self, window: float = 10.0) -> bool:
        """Is a target pulling (its status stream is open) or about to (it fetched our agent metadata lately)?"""
        return self.active_transfers > 0 or time.monotonic() - self.last_metadata_request < window

    def wait_for_change(self, seen: int, timeout: float) -> _Status:
        with self._changed:
            if self._status.version == seen and not self.stopping:
                self._changed.wait(timeout)
            return replace(self._status)

    def status_message(self, status: _Status | None = None) -> worker_pb2.WorkerStatus:
        status = status or self._status
        manifest = self.manifest
        return worker_pb2.WorkerStatus(
            state=STATES[status.state],
            identity=manifest.identity.to_proto() if manifest else None,
            agent_name=self.info.agent_name,
            tensor_count=manifest.tensor_count if manifest else 0,
            total_bytes=manifest.total_bytes if manifest else 0,
            message=status.message,
            updated_unix_ms=int(status.updated * 1000),
            pod_name=self.info.pod_name,
            pod_uid=self.info.pod_uid,
            pod_namespace=self.info.pod_namespace,
            node_name=self.info.node_name,
            instance=self.info.instance,
            endpoint=self.info.endpoint,
            active_transfers=self.active_transfers,
        )

    def _set_health(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        ready = self._status.state == "Ready"
        self._health.set("", serving)  # the process is up
        self._health.set(SERVICE_NAME, serving if ready else not_serving)

    def stop(self, grace: float = 5.0) -> None:
        """Stop serving: status streams end, in-flight calls get `grace` seconds."""
        with self._changed:
            self.stopping = True
            self._changed.notify_all()
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1)
