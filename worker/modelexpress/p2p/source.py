"""A source worker: registers its tensors with NIXL, serves them over WorkerService, records itself.

Life cycle: Initializing (memory registered, manifest built) -> Ready (recorded in the registry,
peers may READ) -> Draining (on stop: removed from the registry first, then the server stops and
the memory is deregistered). A heartbeat keeps the registry record fresh (`MX_STATUS_TTL_SECS`).
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from modelexpress import metrics
from modelexpress.config.worker import WorkerSettings, WorkerSettingsError
from modelexpress.kubeclient import default_namespace, kube_api_client
from modelexpress.p2p import notices
from modelexpress.p2p.access import PeerAccess, PeerPolicy
from modelexpress.p2p.checksum import checksums, choose_algorithm
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import TensorLayout
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.records import Registrar, SourceRecord
from modelexpress.p2p.service import WorkerInfo, WorkerServer

log = logging.getLogger(__name__)
# Each wait of the responder delays a connecting peer's wire-up by up to one poll.
_ACTIVE_POLL, _IDLE_POLL = 0.001, 0.1


def advertised_host(settings: WorkerSettings) -> str:
    """`MX_WORKER_HOST`, else this host's resolvable address, else loopback."""
    if settings.worker_host:
        return settings.worker_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def peer_access(settings: WorkerSettings) -> PeerAccess | None:
    """The access check `MX_PEER_AUTH` asks for (None: every caller is served)."""
    if settings.peer_auth == "off":
        log.info("peer authentication off (MX_PEER_AUTH=off): anyone who reaches this port may read the weights")
        return None
    try:
        selector = PeerPolicy.parse_selector(settings.peer_selector)
    except ValueError as exc:
        raise WorkerSettingsError(str(exc)) from None
    policy = PeerPolicy(
        namespace=default_namespace(settings.pod_namespace),
        namespaces=tuple(settings.peer_namespaces),
        selector=selector,
        trusted_users=tuple(settings.peer_trusted_users),
    )
    log.info("peer authentication on: opted-in pods of %s%s may read", ", ".join([policy.namespace, *policy.namespaces]),
             f" with labels {settings.peer_selector}" if selector else "")  # fmt: skip
    return PeerAccess(kube_api_client(), policy, settings.peer_audience)


def serving_tls(settings: WorkerSettings) -> tuple[bytes, bytes] | None:
    """(certificate, key) for a TLS WorkerService, or None for plaintext; one clear error for half a pair."""
    cert, key = settings.worker_tls_cert_file, settings.worker_tls_key_file
    if not cert and not key:
        return None
    if not cert or not key:
        raise WorkerSettingsError(
            "MX_WORKER_TLS_CERT_FILE and MX_WORKER_TLS_KEY_FILE go together: set both, or neither"
        )
    try:
        return Path(cert).read_bytes(), Path(key).read_bytes()
    except OSError as exc:
        raise WorkerSettingsError(f"MX_WORKER_TLS_*_FILE: cannot read {exc.filename} ({exc.strerror})") from None


class SourceWorker:
    """Serves one rank's tensors until stopped."""

    def __init__(
        self,
        identity: WorkerIdentity,
        layout: TensorLayout,
        settings: WorkerSettings,
        engine: NixlEngine | None = None,
        checksums: dict[str, int] | None = None,
        algorithm: str | None = None,
    ) -> None:
        """`checksums` (with the `algorithm` they were made with): the digests to serve, when the caller
        has them already (a target serves those it verified against); computed otherwise."""
        self.identity = identity
        self.layout = layout
        self.settings = settings
        self.engine = engine or NixlEngine(progress_thread=settings.nixl_progress_thread)
        self.worker_id = f"{self.engine.name}-{uuid.uuid4().hex[:6]}"
        host = advertised_host(settings)
        bind = settings.worker_host or "0.0.0.0"
        self.server = WorkerServer(
            WorkerInfo(agent_name=self.engine.name), bind, settings.worker_grpc_port, self.engine.backend,
            peer_access(settings), serving_tls(settings),
        )  # fmt: skip
        self.server.max_pullers = settings.max_pullers
        self.endpoint = f"{host}:{self.server.port}"
        self.server.info = WorkerInfo(
            agent_name=self.engine.name,
            endpoint=self.endpoint,
            pod_name=settings.pod_name or "",
            pod_uid=settings.pod_uid or "",
            pod_namespace=settings.pod_namespace or "",
            node_name=settings.node_name or "",
            instance=settings.instance or settings.pod_name or "",
        )
        self._checksums = checksums
        self._algorithm = algorithm
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.manifest: Manifest | None = None
        self.served_pulls = 0
        self.served_bytes = 0
        self._registry: Registrar | None = None
        self._record: SourceRecord | None = None

    def start(self, registry: Registrar | None = None) -> None:
        """Register memory, build the manifest, serve, and (with a registry) publish as Ready."""
        self.server.start()
        if not self.engine.regions:
            self.engine.register(self.layout)
        self._registry = registry
        self._offer()
        self._spawn(self._heartbeat, "mx-heartbeat")
        self._spawn(self._respond, "mx-responder")

    def _offer(self) -> None:
        """Manifest of the memory as it is now, served and recorded as Ready."""
        algorithm = self._algorithm or choose_algorithm(self.layout, self.settings.checksum_algorithm)
        served = self._checksums if self._checksums is not None else checksums(self.layout, algorithm)
        self.manifest = Manifest.build(self.identity, self.layout, served, algorithm)
        self.server.publish(self.manifest, self.engine.metadata())
        self.server.set_state("Ready", f"{self.manifest.tensor_count} tensors, {self.manifest.total_bytes} bytes")
        if self._registry is not None:
            self._record = SourceRecord(
                worker_id=self.worker_id,
                identity=self.identity,
                endpoint=self.endpoint,
                agent_name=self.engine.name,
                state="Ready",
                tensor_count=self.manifest.tensor_count,
                total_bytes=self.manifest.total_bytes,
                node=self.settings.node_name or None,
                zone=self.settings.zone or None,
                domain=self.settings.domain or None,
                pod_uid=self.settings.pod_uid or None,
            )
            self._registry.publish(self._record)

    def hold(self, reason: str) -> None:
        """Stop offering the memory because its contents are about to change: peers and the registry see
        the source leave Ready (linked targets abandon it), until `republish`."""
        self.server.set_state("Initializing", reason)
        if self._registry is not None and self._record is not None:
            self._record = self._record.model_copy(update={"state": "Initializing"})
            self._registry.publish(self._record)

    def republish(
        self, identity: WorkerIdentity, checksums: dict[str, int] | None = None, algorithm: str | None = None
    ) -> None:
        """Offer the same memory again, now holding `identity`'s weights (a new version, say)."""
        self.identity, self._checksums, self._algorithm = identity, checksums, algorithm
        self._offer()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _heartbeat(self) -> None:
        interval = max(1.0, self.settings.status_ttl_secs / 3)
        while not self._stop.wait(interval):
            if self._registry is not None and self._record is not None:
                try:
                    self._registry.publish(self._record)
                except Exception as exc:  # a registry hiccup must not kill the source
                    log.warning("refreshing the registry record failed: %s", exc)

    def _respond(self) -> None:
        """Progress the agent (connection set-up needs the passive side) and count the pulls peers report.

        Fast while a target is connecting or pulling, slow otherwise, so an idle source costs nothing.
        The engine is only touched from this thread after start(), so NIXL's thread-confinement holds.
        """
        while not self._stop.wait(_ACTIVE_POLL if self.server.peers_expected() else _IDLE_POLL):
            for messages in self.engine.notifications().values():
                for message in messages:
                    nbytes = notices.parse_pulled(message)
                    if nbytes is not None:
                        self.served_pulls += 1
                        self.served_bytes += nbytes
                        metrics.SERVED_PULLS.inc()
                        metrics.SERVED_BYTES.inc(nbytes)

    def stop(self) -> None:
        """Drain: leave the registry, tell watchers, stop serving, release memory registrations."""
        self.server.set_state("Draining", "stopping")
        if self._registry is not None:
            try:
                self._registry.remove(self.worker_id)
            except Exception as exc:
                log.warning("removing the registry record failed: %s", exc)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self.server.stop(grace=2)
        self.engine.deregister_all()
