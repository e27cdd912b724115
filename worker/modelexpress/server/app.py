"""The embedded ModelExpress server: gRPC services over the local cache and its SQLite database.

`HealthService` (plus standard `grpc.health.v1`), `ApiService` (`ping`, `models`), `ModelService`
(ensure downloaded with streamed status, list, list files, stream files in chunks, delete). Model
names and file paths are checked before anything is read or removed: `..`, absolute paths and NUL
bytes are refused with INVALID_ARGUMENT. A model being streamed is not deleted (FAILED_PRECONDITION).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelexpress import __version__
from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc
from modelexpress.cache.database import CachedModel
from modelexpress.cache.errors import DownloadError
from modelexpress.cache.sources import ModelSource, parse_source
from modelexpress.cache.transfers import stays_inside
from modelexpress.config import ModelExpressConfig
from modelexpress.config.client import DEFAULT_TRANSFER_CHUNK, MAX_TRANSFER_CHUNK
from modelexpress.listening import PortUnavailableError, bind_port
from modelexpress.server.actions import ActionError, actions
from modelexpress.server.downloads import SingleFlight
from modelexpress.server.metrics import ServerCounters, ServerView, serve_server_metrics
from modelexpress.server.stores import LocalStore, ModelStore, StoreUnavailableError
from modelexpress.tokenreview import TokenReviewer, bearer_token

log = logging.getLogger(__name__)


def _checked_name(name: str, context: grpc.ServicerContext, local_ok: bool = False) -> ModelSource:
    """The model a request names; local paths only where `local_ok` (forgetting a record, never serving)."""
    try:
        source = parse_source(name)
    except DownloadError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if source.provider == "local" and not local_ok:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "local paths are not served; name a model (hf://org/name)")
    return source


class _Health(server_pb2_grpc.HealthServiceServicer):  # type: ignore[misc]
    def __init__(self, started: float) -> None:
        self.started = started

    def GetHealth(self, request: server_pb2.HealthRequest, context: grpc.ServicerContext) -> server_pb2.HealthResponse:
        return server_pb2.HealthResponse(
            version=__version__, status="ok", uptime_seconds=int(time.time() - self.started)
        )


class _Api(server_pb2_grpc.ApiServiceServicer):  # type: ignore[misc]
    def __init__(self, server: ModelExpressServer) -> None:
        self.server = server

    def SendRequest(self, request: server_pb2.ApiRequest, context: grpc.ServicerContext) -> server_pb2.ApiResponse:
        try:
            payload = json.loads(request.payload) if request.payload else {}
        except json.JSONDecodeError as exc:
            return server_pb2.ApiResponse(success=False, error=f"payload is not JSON: {exc}")
        if not isinstance(payload, dict):
            return server_pb2.ApiResponse(success=False, error="payload must be a JSON object")
        known = actions(self.server)
        action = known.get(request.action)
        if action is None:
            return server_pb2.ApiResponse(
                success=False, error=f"unknown action {request.action!r}; try one of {sorted(known)}"
            )
        try:
            result = action(payload)
        except (ActionError, DownloadError) as exc:
            return server_pb2.ApiResponse(success=False, error=str(exc))
        if request.action == "ping":
            result["id"] = request.id
        return server_pb2.ApiResponse(success=True, data=json.dumps(result).encode())


class _Models(server_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, server: ModelExpressServer) -> None:
        self.server = server

    def EnsureModelDownloaded(
        self, request: server_pb2.ModelDownloadRequest, context: grpc.ServicerContext
    ) -> Iterator[server_pb2.ModelStatusUpdate]:
        source = _checked_name(request.model_name, context)
        self.server.authorize(context, f"ensure {source.uri}")
        revision = request.revision or "main"
        work = self.server.download_work(source, revision, list(request.allow_patterns), list(request.ignore_patterns))
        yield server_pb2.ModelStatusUpdate(model_name=source.uri, status=server_pb2.MODEL_STATUS_QUEUED)
        yield from self.server.downloads.join((source.uri, revision), work, context.is_active)

    def ListModels(
        self, request: server_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> server_pb2.ListModelsResponse:
        return server_pb2.ListModelsResponse(
            models=[
                server_pb2.CachedModel(
                    model_name=m.uri, revision=m.revision, resolved_revision=m.resolved_revision,
                    size_bytes=m.size_bytes, files=m.files, last_used_unix=int(m.last_used_at), pinned=m.pinned,
                )
                for m in self.server.store.models()
            ]
        )  # fmt: skip

    def ListModelFiles(
        self, request: server_pb2.ModelFilesRequest, context: grpc.ServicerContext
    ) -> server_pb2.ModelFileList:
        model = self.server.cached(_checked_name(request.model_name, context), request.revision, context)
        files = model_files(self.server.files_root(model, context))
        return server_pb2.ModelFileList(
            files=[server_pb2.ModelFile(path=rel, size=size) for rel, size in files],
            resolved_revision=model.resolved_revision,
            total_bytes=sum(size for _, size in files),
            cache_relative_path=self.server.store.relative_path(model),
            revision=model.revision,
        )

    def StreamModelFiles(
        self, request: server_pb2.ModelFilesRequest, context: grpc.ServicerContext
    ) -> Iterator[server_pb2.FileChunk]:
        model = self.server.cached(_checked_name(request.model_name, context), request.revision, context)
        chunk = min(MAX_TRANSFER_CHUNK, request.chunk_size or self.server.chunk_size)
        root = self.server.files_root(model, context)
        files = model_files(root)
        if request.paths:
            sizes = dict(files)
            for wanted in request.paths:
                if not stays_inside(wanted):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"file path {wanted!r} is outside the model")
                if wanted not in sizes:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"{model.uri} has no file {wanted!r}")
            files = [(wanted, sizes[wanted]) for wanted in request.paths]
        with self.server.reading(model.uri):
            self.server.store.touch(model)
            for index, (rel, size) in enumerate(files):
                last_file = index == len(files) - 1
                with (root / rel).open("rb") as f:
                    offset = 0
                    while True:
                        data = f.read(chunk)
                        end = offset + len(data) >= size
                        yield server_pb2.FileChunk(
                            path=rel,
                            offset=offset,
                            total_size=size,
                            data=data,
                            last_chunk=end,
                            last_file=last_file and end,
                        )
                        offset += len(data)
                        self.server.counters.add("streamed_bytes", len(data))
                        if end or not data:
                            break

    def DeleteModel(
        self, request: server_pb2.DeleteModelRequest, context: grpc.ServicerContext
    ) -> server_pb2.DeleteModelResponse:
        # A local model that `model list` shows can be forgotten: the store drops its record and never
        # deletes the directory, which the user made and may still use outside ModelExpress.
        source = _checked_name(request.model_name, context, local_ok=True)
        self.server.authorize(context, f"delete {source.uri}")
        if self.server.readers[source.uri]:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"{source.uri} is being streamed to a client; retry when it ends"
            )
        removed = self.server.store.remove(source, request.revision or None)
        if not removed:
            return server_pb2.DeleteModelResponse(deleted=False, message=f"{source.uri} is not cached")
        if source.provider == "local":
            message = f"forgot {source.uri} ({len(removed)} record(s)); the directory is yours and stays"
        else:
            message = f"removed {len(removed)} revision(s) of {source.uri}"
        return server_pb2.DeleteModelResponse(deleted=True, message=message)


def model_files(root: Path) -> list[tuple[str, int]]:
    """(relative path, size) of every file under a model directory, in path order (symlinks followed)."""
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(".incomplete"):
            files.append((path.relative_to(root).as_posix(), path.stat().st_size))
    return files


class ModelExpressServer:
    """The server of one machine: gRPC on `server.host:server.port` over the local cache."""

    def __init__(
        self,
        config: ModelExpressConfig,
        chunk_size: int = DEFAULT_TRANSFER_CHUNK,
        store: ModelStore | None = None,
        reviewer: TokenReviewer | None = None,
    ) -> None:
        self.reviewer = reviewer
        self.config = config
        self.store: ModelStore = store if store is not None else LocalStore(config)
        self.chunk_size = chunk_size
        self.downloads = SingleFlight()
        self.readers: Counter[str] = Counter()
        self.counters = ServerCounters()
        self.metrics_port: int | None = None
        self.started = time.time()
        self._readers_lock = threading.Lock()
        self._health = health.HealthServicer()
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="mx-server"),
            # SO_REUSEPORT (gRPC's default) let a second server start on a port in use and clients reach
            # either at random: bind exclusively, so the second one fails with the port's name.
            options=[("grpc.max_send_message_length", MAX_TRANSFER_CHUNK + (1 << 20)), ("grpc.so_reuseport", 0)],
        )
        server_pb2_grpc.add_HealthServiceServicer_to_server(_Health(self.started), self._grpc)
        server_pb2_grpc.add_ApiServiceServicer_to_server(_Api(self), self._grpc)
        server_pb2_grpc.add_ModelServiceServicer_to_server(_Models(self), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        address = f"{config.server.host}:{config.server.port}"
        self.port = bind_port(lambda: self._grpc.add_insecure_port(address), address, "the server")

    def start(self) -> None:
        view = ServerView(
            self.counters,
            downloads_started=lambda: self.downloads.started,
            downloads_in_flight=lambda: len(self.downloads.in_flight()),
            streams=lambda: sum(self.readers.values()),
        )
        try:
            self.metrics_port = serve_server_metrics(view, self.config.server.metrics_port, self.config.server.host)
        except OSError as exc:
            raise PortUnavailableError(
                f"cannot serve metrics on {self.config.server.host}:{self.config.server.metrics_port} "
                f"({exc.strerror}); choose another server.metrics_port"
            ) from exc
        self._grpc.start()
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("ModelExpress server listening on %s:%d", self.config.server.host, self.port)

    def stop(self, grace: float | None = None) -> None:
        self._health.enter_graceful_shutdown()
        timeout = grace if grace is not None else float(self.config.server.shutdown_timeout_seconds)
        self._grpc.stop(timeout if self.config.server.graceful_shutdown else 0).wait(timeout + 1)
        self.store.close()

    def wait(self) -> None:
        self._grpc.wait_for_termination()

    def cached(self, source: ModelSource, revision: str, context: grpc.ServicerContext) -> CachedModel:
        found = self.store.find(source, revision or None)
        if not found and revision:  # a commit sha names the revision it resolved to
            found = [m for m in self.store.find(source) if m.resolved_revision == revision]
        if not found:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{source.uri} is not cached; ensure it is downloaded first")
        return max(found, key=lambda m: m.downloaded_at)

    def files_root(self, model: CachedModel, context: grpc.ServicerContext) -> Path:
        try:
            return self.store.files_root(model)
        except StoreUnavailableError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def authorize(self, context: grpc.ServicerContext, what: str) -> None:
        """With a reviewer, only callers presenting a valid ServiceAccount token may `what`."""
        if self.reviewer is None:
            return
        token = bearer_token(context.invocation_metadata())
        if token is None:
            self.counters.add("refused_calls")
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{what} needs a ServiceAccount token: send 'authorization: Bearer <token>' "
                "(MODEL_EXPRESS_TOKEN_FILE in the client)",
            )
        try:
            user = self.reviewer.review(token)
        except Exception as exc:  # the API server's answer is needed; fail closed, and say so
            log.warning("TokenReview failed: %s", type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "cannot check the token now (TokenReview failed); retry")
        if user is None:
            self.counters.add("refused_calls")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{what}: the token was not accepted by the API server")
        log.info("%s by %s", what, user.username)

    def reading(self, uri: str) -> _Reading:
        return _Reading(self, uri)

    def download_work(
        self, source: ModelSource, revision: str, allow: list[str], ignore: list[str]
    ) -> Callable[[Callable[[server_pb2.ModelStatusUpdate], None]], None]:
        def work(publish: Callable[[server_pb2.ModelStatusUpdate], None]) -> None:
            def progress(done: int, total: int, files: int, total_files: int) -> None:
                publish(
                    server_pb2.ModelStatusUpdate(
                        model_name=source.uri, status=server_pb2.MODEL_STATUS_DOWNLOADING, bytes_done=done,
                        bytes_total=total, files_done=files, files_total=total_files,
                    )
                )  # fmt: skip

            try:
                model = self.store.ensure(source, revision, allow or None, ignore or None, progress)
            except DownloadError as exc:
                self.counters.add("download_failures")
                publish(
                    server_pb2.ModelStatusUpdate(
                        model_name=source.uri,
                        status=server_pb2.MODEL_STATUS_ERROR,
                        message=str(exc),
                        reason=exc.reason.value,
                    )
                )
                return
            except Exception as exc:  # every waiter must hear how it ended
                self.counters.add("download_failures")
                log.exception("downloading %s failed", source.uri)
                publish(
                    server_pb2.ModelStatusUpdate(
                        model_name=source.uri,
                        status=server_pb2.MODEL_STATUS_ERROR,
                        message=f"internal error: {type(exc).__name__}: {exc}",
                        reason="InternalError",
                    )
                )
                return
            publish(
                server_pb2.ModelStatusUpdate(
                    model_name=source.uri, status=server_pb2.MODEL_STATUS_DOWNLOADED, bytes_done=model.size_bytes,
                    bytes_total=model.size_bytes, resolved_revision=model.resolved_revision,
                    files_done=model.files, files_total=model.files, message=f"cached at {model.path}",
                )
            )  # fmt: skip

        return work


class _Reading:
    def __init__(self, server: ModelExpressServer, uri: str) -> None:
        self.server, self.uri = server, uri

    def __enter__(self) -> None:
        with self.server._readers_lock:
            self.server.readers[self.uri] += 1

    def __exit__(self, *_: object) -> None:
        with self.server._readers_lock:
            self.server.readers[self.uri] -= 1
