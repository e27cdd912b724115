"""Downloads from object stores (`s3://`, `gs://`, `az://`) with obstore (Rust object_store bindings).

Credentials and endpoints come from the stores' usual environment: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` (MinIO and other S3-compatible servers;
`AWS_ALLOW_HTTP=true` for plain HTTP), `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, ...
(the variables obstore documents for S3Config, GCSConfig and AzureConfig).

Files land under `<cache>/<scheme>/<bucket>/<prefix>/` exactly as stored, so a worker loads the
directory as a local model path. As for the hub: sizes come from the listing first (quota check),
each object is written to `<name>.incomplete`, resumed with a ranged GET after an interruption,
checked against its size (and MD5 when the ETag is one) and only then renamed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
from obstore.store import from_url

from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.sources import ModelSource
from modelexpress.cache.transfers import (
    DownloadResult,
    Progress,
    attempt_resuming,
    check_space,
    discard_unless,
    fetch_all,
    file_digest,
    partial_bytes,
    present,
    safe_name,
)

log = logging.getLogger(__name__)
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


@dataclass(frozen=True)
class StoredObject:
    key: str
    relative: str
    size: int
    etag: str | None


@dataclass(frozen=True)
class ObjectPlan:
    source: ModelSource
    bucket: str
    prefix: str
    objects: tuple[StoredObject, ...]

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


def _store(source: ModelSource) -> tuple[Any, str, str]:
    bucket, _, prefix = source.name.partition("/")
    try:
        return from_url(f"{source.provider}://{bucket}"), bucket, prefix.strip("/")
    except Exception as exc:
        raise DownloadError(FailureReason.INVALID_SOURCE, f"{source.uri}: {exc}") from exc


def _translate(exc: Exception, what: str) -> DownloadError:
    if isinstance(exc, DownloadError):
        return exc
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text or "NoSuchKey" in text or "404" in text:
        return DownloadError(FailureReason.NOT_FOUND, f"{what}: not found")
    if isinstance(exc, PermissionError) or any(s in text for s in ("403", "401", "AccessDenied", "Unauthenticated")):
        return DownloadError(FailureReason.UNAUTHORIZED, f"{what}: access refused")
    return DownloadError(FailureReason.NETWORK, f"{what}: {type(exc).__name__}: {text[:300]}")


def _matches(relative: str, allow: list[str] | None, ignore: list[str] | None) -> bool:
    from fnmatch import fnmatch

    if allow and not any(fnmatch(relative, p) for p in allow):
        return False
    return not (ignore and any(fnmatch(relative, p) for p in ignore))


def plan_objects(source: ModelSource, allow: list[str] | None = None, ignore: list[str] | None = None) -> ObjectPlan:
    """List the objects under the source's prefix, with sizes and ETags."""
    store, bucket, prefix = _store(source)
    objects = []
    try:
        for batch in obstore.list(store, prefix=prefix or None):
            for meta in batch:
                key = str(meta["path"])
                relative = key[len(prefix) :].lstrip("/") if prefix else key
                if not relative or not _matches(relative, allow, ignore):
                    continue
                safe_name(relative)
                objects.append(StoredObject(key, relative, int(meta["size"]), meta.get("e_tag")))
    except Exception as exc:
        raise _translate(exc, source.uri) from exc
    if not objects:
        raise DownloadError(FailureReason.NOT_FOUND, f"{source.uri}: no object under this prefix matches")
    return ObjectPlan(source, bucket, prefix, tuple(sorted(objects, key=lambda o: o.key)))


def target_directory(cache_dir: Path, plan: ObjectPlan) -> Path:
    return cache_dir / plan.source.provider / plan.bucket / plan.prefix


def _fetch(store: Any, plan: ObjectPlan, obj: StoredObject, target: Path) -> None:
    what = f"{plan.source.provider}://{plan.bucket}/{obj.key}"
    final = target / obj.relative
    partial = final.with_name(f"{final.name}.incomplete")
    final.parent.mkdir(parents=True, exist_ok=True)

    def attempt() -> None:
        start = partial.stat().st_size if partial.exists() else 0
        if start > obj.size:
            partial.unlink()
            start = 0
        if start < obj.size:
            result = obstore.get(store, obj.key, options={"range": (start, obj.size)} if start else None)
            with partial.open("ab" if start else "wb") as out:
                for chunk in result.stream(min_chunk_size=1 << 20):
                    out.write(chunk)
        elif not partial.exists():
            partial.touch()

    attempt_resuming(what, attempt, _translate)
    size = partial.stat().st_size
    problem = None
    if size != obj.size:
        problem = f"{size} bytes, the store listed {obj.size}"
    elif obj.etag and (m := _MD5_ETAG.match(obj.etag)) and file_digest(partial, "md5") != m.group(1):
        problem = "MD5 differs from the object's ETag"
    discard_unless(partial, problem, what)
    os.replace(partial, final)


def download_objects(
    plan: ObjectPlan,
    cache_dir: Path,
    progress: Progress | None = None,
    max_workers: int = 8,
    reserve_bytes: int = 0,
) -> DownloadResult:
    """Fetch every object of `plan` under the cache directory, verified; resumes partial files."""
    started = time.perf_counter()
    store, _, _ = _store(plan.source)
    target = target_directory(cache_dir, plan)
    missing = [o for o in plan.objects if not present(target / o.relative, o.size)]
    check_space(cache_dir, sum(o.size for o in missing), reserve_bytes)
    fetch_all(
        missing,
        lambda o: _fetch(store, plan, o, target),
        lambda o: o.size,
        plan.total_bytes,
        len(plan.objects),
        lambda: partial_bytes(target / f"{o.relative}.incomplete" for o in missing),
        progress,
        max_workers,
    )
    return DownloadResult(
        uri=plan.source.uri,
        revision="",
        resolved_revision=max((o.etag or "" for o in plan.objects), default="").strip('"'),
        path=target,
        size_bytes=plan.total_bytes,
        files=len(plan.objects),
        seconds=time.perf_counter() - started,
    )
