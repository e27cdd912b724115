"""Receiving a model's files from the server into this machine's cache (no shared storage).

The files land in the same layout the server keeps (`models--org--name/snapshots/<commit>/...` for
Hugging Face models), so vLLM reads them with `HF_HUB_CACHE` pointing at this cache. Every chunk is
checked against the listing: the file it belongs to, its offset, the file's total size; a file is
written under `<name>.incomplete` and renamed only when its last chunk arrived with every byte. A
broken stream removes the partial file and is retried for the files still missing, so nothing that
looks complete is ever left half-written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import grpc

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc
from modelexpress.cache.huggingface import repo_folder
from modelexpress.cache.sources import ModelSource, parse_source
from modelexpress.cache.transfers import DownloadResult, check_space, present, stays_inside

log = logging.getLogger(__name__)
ReceiveProgress = Callable[[int, int], None]
"""progress(bytes_received, bytes_total)"""


class StreamError(RuntimeError):
    """The stream broke or broke the protocol; what was received of the current file was discarded."""


@dataclass(frozen=True)
class ReceivedModel(DownloadResult):
    """A model placed in the cache by streaming it from a server; `received_bytes` is what this call
    actually transferred (files already complete are not fetched again)."""

    received_bytes: int


def default_layout(source: ModelSource, resolved: str) -> str:
    """The directory a server would use for this model (when it does not say)."""
    if source.provider == "hf":
        return (repo_folder(Path(), source.name) / "snapshots" / resolved).as_posix()
    return f"{source.provider}/{source.name}"


def _checked_relative(path: str, what: str) -> PurePosixPath:
    if not stays_inside(path):
        raise StreamError(f"the server named {what} {path!r}, which is outside this cache; refusing to write it")
    return PurePosixPath(path)


class _FileWriter:
    """One file being received: appended in order, fsynced and renamed when complete."""

    def __init__(self, final: Path, size: int) -> None:
        self.final, self.size, self.written = final, size, 0
        self.partial = final.with_name(final.name + ".incomplete")
        final.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO = self.partial.open("wb")

    def write(self, chunk: server_pb2.FileChunk) -> None:
        if chunk.offset != self.written:
            raise StreamError(f"{self.final.name}: chunk at offset {chunk.offset}, expected {self.written}")
        if chunk.total_size != self.size:
            raise StreamError(f"{self.final.name}: the stream says {chunk.total_size} bytes, the listing {self.size}")
        if self.written + len(chunk.data) > self.size:
            raise StreamError(f"{self.final.name}: more bytes than its size {self.size}")
        self._f.write(chunk.data)
        self.written += len(chunk.data)

    def finish(self) -> None:
        if self.written != self.size:
            raise StreamError(f"{self.final.name}: last chunk after {self.written} of {self.size} bytes")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self.partial.replace(self.final)

    def discard(self) -> None:
        self._f.close()
        self.partial.unlink(missing_ok=True)


class _Counter:
    """Bytes received in one attempt, reported with what earlier attempts completed."""

    def __init__(self, base: int, total: int, progress: ReceiveProgress | None) -> None:
        self.base, self.total, self.progress, self.got = base, total, progress, 0

    def __call__(self, n: int) -> None:
        self.got += n
        if self.progress is not None:
            self.progress(min(self.total, self.base + self.got), self.total)


def _write_stream(
    chunks: Iterator[server_pb2.FileChunk],
    root: Path,
    expected: list[server_pb2.ModelFile],
    on_bytes: Callable[[int], None],
) -> None:
    """Write the chunks of `expected` (in order) under `root`; every file complete or none of it."""
    pending = list(expected)
    writer: _FileWriter | None = None
    try:
        for chunk in chunks:
            if writer is None:
                if not pending:
                    raise StreamError(f"the server sent {chunk.path!r} after the last file")
                head = pending[0]
                if chunk.path != head.path:
                    raise StreamError(f"the server sent {chunk.path!r} where {head.path!r} was due")
                writer = _FileWriter(root / head.path, head.size)  # names checked by receive_model
            elif chunk.path != writer.final.relative_to(root).as_posix():
                raise StreamError(f"the server switched to {chunk.path!r} before finishing the previous file")
            writer.write(chunk)
            on_bytes(len(chunk.data))
            if chunk.last_chunk:
                writer.finish()
                writer = None
                pending.pop(0)
                if chunk.last_file and pending:
                    raise StreamError(f"the stream ended with {len(pending)} file(s) still due")
        if writer is not None or pending:
            raise StreamError(f"the stream ended early: {len(pending)} file(s) not received completely")
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "RPC"
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise StreamError(f"the file stream broke ({code}: {detail})") from None
    finally:
        if writer is not None:
            writer.discard()


def receive_model(
    channel: grpc.Channel,
    model_name: str,
    revision: str,
    cache_dir: Path,
    chunk_size: int,
    timeout: float,
    retries: int = 2,
    progress: ReceiveProgress | None = None,
) -> ReceivedModel:
    """Stream every file of a model the server has cached into `cache_dir`, resuming by file across
    broken streams (up to `retries` more attempts); already complete files are not fetched again."""
    started = time.perf_counter()
    stub = server_pb2_grpc.ModelServiceStub(channel)
    listing: server_pb2.ModelFileList = stub.ListModelFiles(
        server_pb2.ModelFilesRequest(model_name=model_name, revision=revision), timeout=timeout
    )
    source = parse_source(model_name)
    relative = listing.cache_relative_path or default_layout(source, listing.resolved_revision)
    root = cache_dir / _checked_relative(relative, "the model directory")
    for file in listing.files:
        _checked_relative(file.path, "a file")
    total = listing.total_bytes
    received = 0
    for attempt in range(retries + 1):
        missing = [f for f in listing.files if not present(root / f.path, f.size)]
        if not missing:
            break
        check_space(cache_dir, sum(f.size for f in missing))
        counter = _Counter(total - sum(f.size for f in missing), total, progress)
        request = server_pb2.ModelFilesRequest(
            model_name=model_name,
            revision=listing.revision or revision,
            chunk_size=chunk_size,
            paths=[f.path for f in missing],
        )
        try:
            try:
                _write_stream(stub.StreamModelFiles(request), root, missing, counter)
            finally:
                received += counter.got
        except StreamError as exc:
            if attempt == retries:
                raise
            log.warning("%s; retrying the %d missing file(s)", exc, len(missing))
            time.sleep(min(2.0, 0.2 * 2**attempt))
    if listing.revision and listing.revision != listing.resolved_revision and source.provider == "hf":
        ref = root.parent.parent / "refs" / listing.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(listing.resolved_revision)
        tmp.replace(ref)
    return ReceivedModel(
        uri=source.uri,
        revision=listing.revision or revision,
        resolved_revision=listing.resolved_revision,
        path=root,
        size_bytes=total,
        files=len(listing.files),
        received_bytes=received,
        seconds=time.perf_counter() - started,
    )
