"""Client of a peer's WorkerService: manifest, agent metadata, status watching, all with deadlines."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import grpc

from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc
from modelexpress.channels import worker_channel
from modelexpress.p2p.manifest import Manifest, ManifestError
from modelexpress.tokenreview import peer_token_metadata

log = logging.getLogger(__name__)
STATE_NAMES = {
    worker_pb2.WORKER_STATE_INITIALIZING: "Initializing",
    worker_pb2.WORKER_STATE_READY: "Ready",
    worker_pb2.WORKER_STATE_DRAINING: "Draining",
}


class SourceUnavailableError(RuntimeError):
    """A source cannot be reached or did not answer in time."""


class SourceBusyError(SourceUnavailableError):
    """A source serves as many targets as it takes (`MX_MAX_PULLERS`); another may be free, or soon."""


class WorkerClient:
    """Talks to one worker's WorkerService."""

    def __init__(self, endpoint: str, timeout: float = 30.0, token_file: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.token_file = token_file
        self._channel = worker_channel(endpoint)
        self._stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        self._watch: grpc.Future | None = None  # type: ignore[type-arg]

    def _credentials(self) -> list[tuple[str, str]]:
        """This worker's peer token, for sources that admit authenticated peers only (read per call)."""
        return peer_token_metadata(self.token_file)

    def _fail(self, what: str, exc: grpc.RpcError) -> SourceUnavailableError:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        return SourceUnavailableError(f"{what} from {self.endpoint} failed ({code}): {detail}")

    def ask_manifest(self, page_size: int = 0) -> Iterator[worker_pb2.ManifestChunk]:
        """Send the manifest request now; its pages arrive while the caller does other things, and
        `manifest(asked)` reads them (closing the client cancels it)."""
        stream: Iterator[worker_pb2.ManifestChunk] = self._stub.GetManifest(
            worker_pb2.GetManifestRequest(page_size=page_size), timeout=self.timeout, metadata=self._credentials()
        )
        return stream

    def manifest(self, page_size: int = 0, asked: Iterator[worker_pb2.ManifestChunk] | None = None) -> Manifest:
        try:
            return Manifest.from_chunks(asked if asked is not None else self.ask_manifest(page_size))
        except grpc.RpcError as exc:
            raise self._fail("fetching the manifest", exc) from exc
        except ManifestError as exc:
            raise SourceUnavailableError(f"the manifest from {self.endpoint} is unusable: {exc}") from exc

    def ask_agent_metadata(self) -> grpc.Future:  # type: ignore[type-arg]
        """Send the agent metadata request now; `agent_metadata(asked)` waits for the answer."""
        future: grpc.Future = self._stub.GetAgentMetadata.future(  # type: ignore[type-arg]
            worker_pb2.GetAgentMetadataRequest(), timeout=self.timeout, metadata=self._credentials()
        )
        return future

    def agent_metadata(self, asked: grpc.Future | None = None) -> worker_pb2.AgentMetadata:  # type: ignore[type-arg]
        try:
            reply: worker_pb2.AgentMetadata = (asked or self.ask_agent_metadata()).result()
            return reply
        except grpc.RpcError as exc:
            raise self._fail("fetching NIXL agent metadata", exc) from exc

    def status(self) -> worker_pb2.WorkerStatus:
        """The worker's current status (the first message of its status stream)."""
        try:
            stream = self._stub.WatchStatus(
                worker_pb2.WatchStatusRequest(), timeout=self.timeout, metadata=self._credentials()
            )
            first: worker_pb2.WorkerStatus = next(iter(stream))
            stream.cancel()
            return first
        except grpc.RpcError as exc:
            raise self._fail("reading the status", exc) from exc

    def watch(
        self,
        on_status: Callable[[worker_pb2.WorkerStatus], None],
        on_end: Callable[[str], None],
        puller: bool = False,
    ) -> threading.Thread:
        """Follow the status stream in a daemon thread; `on_end` gets the reason when it stops.

        `puller`: this stream belongs to a target pulling from the worker (counted as its load).
        """
        stream = self._stub.WatchStatus(worker_pb2.WatchStatusRequest(puller=puller), metadata=self._credentials())
        self._watch = stream

        def follow() -> None:
            reason = "the worker ended its status stream"
            received = False
            try:
                for status in stream:
                    received = True
                    on_status(status)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and not received:
                    reason = exc.details() if isinstance(exc, grpc.Call) else "busy"
                elif code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) and not received:
                    reason = exc.details() if isinstance(exc, grpc.Call) else "refused"
                elif code == grpc.StatusCode.UNAVAILABLE and not received:
                    reason = "nothing answers there (UNAVAILABLE): the worker is gone or not listening"
                else:
                    reason = f"status stream broke: {code or exc}"
            on_end(reason)

        thread = threading.Thread(target=follow, name=f"mx-watch-{self.endpoint}", daemon=True)
        thread.start()
        return thread

    def attach(self, on_end: Callable[[str], None]) -> worker_pb2.WorkerStatus:
        """Follow the status stream as a puller; returns its first message (the current status).

        One call, not a status read and then a stream: the stream's first message is the status,
        so a target learns it in one round trip. Bounded by the client's timeout. `on_end` is called only for a
        stream that was attached; a refusal (SourceBusyError when the source is busy) is raised.
        """
        first: list[worker_pb2.WorkerStatus] = []
        ended: list[str] = []
        answered = threading.Event()

        def on_status(status: worker_pb2.WorkerStatus) -> None:
            if not first:
                first.append(status)
                answered.set()

        def on_stream_end(reason: str) -> None:
            ended.append(reason)
            answered.set()
            if first:  # a stream refused outright (e.g. busy) is an attach that failed, not a death
                on_end(reason)

        self.watch(on_status, on_stream_end, puller=True)
        if not answered.wait(self.timeout):
            raise SourceUnavailableError(
                f"reading the status from {self.endpoint} failed: no answer in {self.timeout}s"
            )
        if not first and ended[0].startswith("busy:"):
            raise SourceBusyError(f"source {self.endpoint} is {ended[0]}")
        if not first:
            raise SourceUnavailableError(f"reading the status from {self.endpoint} failed: {ended[0]}")
        return first[0]

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._channel.close()
