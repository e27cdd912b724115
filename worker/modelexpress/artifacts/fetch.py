"""The target side: fetch a source's artifacts, check every digest, then move them into place.

Files are written into a staging directory inside each cache root (same filesystem, so the final
move is a rename), read in windows of `window` bytes so that a broken stream resumes where it
stopped, hashed as they arrive, and moved into place only when every file of the set is complete
and identical to its manifest entry — entry points last. A failure removes the staging directory:
nothing partial or corrupt is ever where the engine reads its caches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from modelexpress import metrics
from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc
from modelexpress.artifacts.collect import STAGING_PREFIX
from modelexpress.artifacts.manifest import ArtifactFile, ArtifactManifest, ArtifactRefusedError, inside, is_entry_point
from modelexpress.channels import worker_channel
from modelexpress.tokenreview import peer_token_metadata
from modelexpress.units import rate, size

log = logging.getLogger(__name__)
Outcome = Literal["received", "present", "refused", "none", "failed"]
WINDOW_BYTES = 64 << 20
ATTEMPTS = 3
_PROGRESS_SECONDS = 10.0


@dataclass
class FetchResult:
    """What a target got: `received` (files moved into place), `present` (all were there already),
    `refused` (a set it must not use), `none` (no source serves any), `failed` (transfer errors)."""

    outcome: Outcome
    reason: str = ""
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    source: str | None = None
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.outcome == "received":
            return (
                f"compiled artifacts: {self.files} file(s), {size(self.bytes)} from {self.source} in "
                f"{self.seconds:.2f}s ({rate(self.bytes / self.seconds if self.seconds else 0.0)})"
            )
        if self.outcome == "present":
            return f"compiled artifacts: all {self.files} file(s) from {self.source} are already in place"
        return f"compiled artifacts not used ({self.outcome}): {self.reason}; the engine compiles"


class _TransferError(RuntimeError):
    """A source stopped answering mid-transfer (after its retries)."""


def fetch_artifacts(
    endpoints: list[str],
    key: dict[str, str],
    roots: dict[str, Path],
    max_bytes: int,
    max_files: int,
    timeout: float = 30.0,
    window: int = WINDOW_BYTES,
) -> FetchResult:
    """The artifacts of the first source in `endpoints` that serves a set this key may use."""
    started = time.perf_counter()
    reasons: list[str] = []
    refused = failed = False  # else every source served nothing, or is not serving yet (UNAVAILABLE)
    for endpoint in endpoints:
        channel = worker_channel(endpoint)
        try:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            try:
                manifest = ArtifactManifest.from_proto(
                    stub.GetArtifacts(worker_pb2.GetArtifactsRequest(), timeout=timeout, metadata=peer_token_metadata())
                )
                manifest.check(key, roots, max_bytes, max_files)
                if not manifest.files:
                    reasons.append(f"{endpoint} serves no artifacts")
                    continue
                placed, nbytes = _receive(stub, endpoint, manifest, roots, timeout, window)
            except ArtifactRefusedError as exc:
                refused = True
                reasons.append(f"{endpoint}: {exc}")
                continue
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                reasons.append(f"{endpoint}: {detail} ({code.name if code else 'error'})")
                failed = failed or code != grpc.StatusCode.UNAVAILABLE
                continue
            except (_TransferError, OSError) as exc:
                reasons.append(f"{endpoint}: {exc}")
                failed = True
                continue
        finally:
            channel.close()
        seconds = time.perf_counter() - started
        outcome: Outcome = "received" if placed else "present"
        metrics.ARTIFACT_FETCHES.labels(outcome).inc()
        metrics.ARTIFACT_BYTES.inc(nbytes)
        return FetchResult(outcome, "", placed or len(manifest.files), nbytes, seconds, endpoint, reasons)
    outcome = "refused" if refused else "failed" if failed else "none"
    if not reasons:
        reasons = ["no Ready source to ask"]
    metrics.ARTIFACT_FETCHES.labels(outcome).inc()
    return FetchResult(outcome, "; ".join(reasons), seconds=time.perf_counter() - started, reasons=reasons)


def _receive(
    stub: worker_pb2_grpc.WorkerServiceStub,
    endpoint: str,
    manifest: ArtifactManifest,
    roots: dict[str, Path],
    timeout: float,
    window: int,
) -> tuple[int, int]:
    """Stage, verify and place the files not yet in place; (files placed, bytes received)."""
    missing = [f for f in manifest.files if not inside(roots[f.root], f.path).is_file()]
    if not missing:
        return 0, 0
    staging = {name: roots[name] / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}" for name in {f.root for f in missing}}
    total = sum(f.size for f in missing)
    log.info("receiving %d compiled artifact file(s), %s, from %s", len(missing), size(total), endpoint)
    try:
        received, last_report = 0, time.monotonic()
        for f in missing:
            received += _download(stub, f, staging[f.root] / f.path, timeout, window)
            if time.monotonic() - last_report >= _PROGRESS_SECONDS:
                log.info("compiled artifacts: %s of %s received", size(received), size(total))
                last_report = time.monotonic()
        # Entry points last: until they are in place the engine sees no compiled model, only cache entries.
        for f in sorted(missing, key=lambda f: is_entry_point(f.path)):
            target = inside(roots[f.root], f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging[f.root] / f.path, target)
        return len(missing), received
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)


def _download(
    stub: worker_pb2_grpc.WorkerServiceStub, f: ArtifactFile, staged: Path, timeout: float, window: int
) -> int:
    """One file into `staged`, window by window, each window retried from where it broke."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    position = 0
    with staged.open("wb") as out:
        while position < f.size:
            length = min(window, f.size - position)
            failures = 0
            while True:
                request = worker_pb2.ReadArtifactRequest(root=f.root, path=f.path, offset=position, length=length)
                end = position + length
                try:
                    for chunk in stub.ReadArtifact(request, timeout=timeout, metadata=peer_token_metadata()):
                        if chunk.offset != position or position + len(chunk.data) > end:
                            raise ArtifactRefusedError(f"{f.path}: the source sent bytes out of order or past its size")
                        out.write(chunk.data)
                        digest.update(chunk.data)
                        position += len(chunk.data)
                except grpc.RpcError as exc:
                    failures += 1
                    if failures >= ATTEMPTS:
                        raise _TransferError(f"reading {f.path} failed {failures} times: {exc}") from exc
                    log.debug("reading %s broke at byte %d (%s); resuming", f.path, position, exc)
                    length = end - position
                    continue
                if position < end:
                    raise ArtifactRefusedError(f"{f.path}: the source has fewer bytes than its manifest lists")
                break
    if digest.hexdigest() != f.sha256:
        raise ArtifactRefusedError(
            f"{f.root}:{f.path}: SHA-256 differs from the manifest (corrupt, or changed at the source)"
        )
    return f.size
