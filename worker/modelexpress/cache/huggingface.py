"""Downloads from the Hugging Face Hub (or any server speaking its API, `HF_ENDPOINT`) into the hub cache layout.

The layout is huggingface_hub's own (`models--org--name/{blobs,snapshots,refs}`: content-addressed
blobs, snapshot symlinks), so vLLM reads the result offline with `HF_HUB_CACHE`. On top of it:

- the revision is resolved to a commit once and every file is fetched at that commit, so a branch
  that moves mid-download cannot mix two versions; `refs/<revision>` records the resolution;
- file names are checked before anything is written: a name that would leave the snapshot
  directory (`../`, absolute) fails the download;
- the total size comes from the hub's metadata first, and a download that cannot fit fails at once
  with the sizes in the message;
- files land as `blobs/<etag>.incomplete` and are renamed when complete and verified (size, and
  the sha256 of LFS files); an interrupted download (a dropped connection, or a killed process)
  resumes from the partial blob with an HTTP Range request; bad bytes are removed, never left
  looking complete. (huggingface_hub itself restarts every file from zero in a new process, hence
  our own transfer loop on its metadata, URL and auth helpers.)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
from filelock import FileLock
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import (  # type: ignore[attr-defined]
    build_hf_headers,
    filter_repo_objects,
    get_session,
    hf_raise_for_status,
)

from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.transfers import (
    DownloadResult,
    Progress,
    attempt_resuming,
    check_space,
    discard_unless,
    fetch_all,
    file_digest,
    partial_bytes,
    safe_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the hub's sha256 of the content


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def _translate(exc: Exception, what: str) -> DownloadError:
    if isinstance(exc, DownloadError):
        return exc
    if isinstance(exc, GatedRepoError):
        return DownloadError(FailureReason.UNAUTHORIZED, f"{what}: the repository is gated and the token has no access")
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)):
        status = getattr(getattr(exc, "response", None), "status_code", 404)
        if status in (401, 403) and not isinstance(exc, RevisionNotFoundError):
            return DownloadError(
                FailureReason.UNAUTHORIZED,
                f"{what}: the hub refused access ({status}): the repository is private, gated or missing",
            )
        return DownloadError(FailureReason.NOT_FOUND, f"{what}: not found ({type(exc).__name__})")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            return DownloadError(FailureReason.UNAUTHORIZED, f"{what}: refused with HTTP {status}")
        if status == 404:
            return DownloadError(FailureReason.NOT_FOUND, f"{what}: HTTP 404")
        return DownloadError(FailureReason.NETWORK, f"{what}: HTTP {status}")
    if isinstance(exc, (httpx2.HTTPError, OSError, LocalEntryNotFoundError)):
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
            return DownloadError(FailureReason.NO_SPACE, f"{what}: the disk filled up")
        return DownloadError(FailureReason.NETWORK, f"{what}: {type(exc).__name__}: {exc}")
    return DownloadError(FailureReason.NETWORK, f"{what}: {type(exc).__name__}: {exc}")


def plan_download(
    repo_id: str,
    revision: str = "main",
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> DownloadPlan:
    """Resolve the revision to a commit and list the files to fetch with their sizes and hashes."""
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise _translate(exc, f"hf://{repo_id}@{revision}") from exc
    if not info.sha:
        raise DownloadError(FailureReason.NOT_FOUND, f"hf://{repo_id}@{revision}: the hub returned no commit")
    siblings = {s.rfilename: s for s in info.siblings or []}
    wanted = list(filter_repo_objects(list(siblings), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
    files = []
    for name in sorted(wanted):
        sibling = siblings[safe_name(name)]
        size = sibling.lfs.size if sibling.lfs else sibling.size
        if size is None:
            raise DownloadError(FailureReason.INTEGRITY, f"hf://{repo_id}: the hub gave no size for {name}")
        files.append(RemoteFile(name, int(size), sibling.lfs.sha256 if sibling.lfs else None))
    if not files:
        raise DownloadError(
            FailureReason.NOT_FOUND,
            f"hf://{repo_id}@{revision}: no file matches allow={allow_patterns} ignore={ignore_patterns}",
        )
    return DownloadPlan(repo_id, revision, info.sha, tuple(files))


def _present(snapshot: Path, file: RemoteFile) -> bool:
    path = snapshot / file.path
    return path.exists() and path.stat().st_size == file.size


def _write_ref(folder: Path, revision: str, commit: str) -> None:
    """`refs/<revision>` -> commit, so offline readers (vLLM with HF_HUB_OFFLINE) resolve the revision name."""
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    tmp.replace(ref)


def _inflight_bytes(folder: Path) -> int:
    blobs = folder / "blobs"
    return partial_bytes(blobs.glob("*.incomplete") if blobs.exists() else [])


def _fetch_verified(
    plan: DownloadPlan, file: RemoteFile, cache_dir: Path, token: str | None, endpoint: str | None
) -> None:
    """One file into `blobs/<etag>` via `<etag>.incomplete` (resumed where a previous attempt or process
    stopped), its size and LFS sha256 checked before the rename, then linked from the snapshot."""
    what = f"hf://{plan.repo_id}@{plan.commit[:12]}: {file.path}"
    folder = repo_folder(cache_dir, plan.repo_id)
    url = hf_hub_url(plan.repo_id, file.path, revision=plan.commit, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except Exception as exc:
        raise _translate(exc, what) from exc
    if not meta.etag:
        raise DownloadError(FailureReason.INTEGRITY, f"{what}: the hub sent no ETag")
    blob = folder / "blobs" / meta.etag
    partial = blob.with_name(f"{meta.etag}.incomplete")
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = cache_dir / ".locks" / folder.name / f"{meta.etag}.lock"  # where huggingface_hub keeps its locks
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # two processes pulling one model share the partial file, in turn
        if not blob.exists():
            attempt_resuming(what, lambda: _stream_into(partial, meta.location, token, file.size), _translate)
            problem = None
            if partial.stat().st_size != file.size:
                problem = f"{partial.stat().st_size} bytes, the hub said {file.size}"
            elif file.sha256 and file_digest(partial, "sha256") != file.sha256:
                problem = f"sha256 differs from the hub's {file.sha256}"
            discard_unless(partial, problem, what)
            os.replace(partial, blob)
    pointer = folder / "snapshots" / plan.commit / file.path
    pointer.parent.mkdir(parents=True, exist_ok=True)
    link = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    link.unlink(missing_ok=True)
    link.symlink_to(os.path.relpath(blob, pointer.parent))
    link.replace(pointer)


def _stream_into(partial: Path, url: str, token: str | None, size: int) -> None:
    """GET `url` into `partial`, from its current length on (HTTP Range) when it has one."""
    start = partial.stat().st_size if partial.exists() else 0
    if start > size:
        start = 0  # longer than the file: not ours to resume, start over
    elif start == size:
        partial.touch()  # complete already (or an empty file): nothing to fetch
        return
    headers = build_hf_headers(token=token)
    if start:
        headers["Range"] = f"bytes={start}-"
    with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        if start and response.status_code != 206:
            start = 0  # the server ignored the range: start over
        with partial.open("ab" if start else "wb") as out:
            for block in response.iter_bytes(1 << 20):
                out.write(block)


def download(
    plan: DownloadPlan,
    cache_dir: Path,
    token: str | None = None,
    endpoint: str | None = None,
    progress: Progress | None = None,
    max_workers: int = 8,
    reserve_bytes: int = 0,
) -> DownloadResult:
    """Fetch every file of `plan` into `cache_dir` (hub layout), verified; resumes partial blobs."""
    started = time.perf_counter()
    folder = repo_folder(cache_dir, plan.repo_id)
    snapshot = folder / "snapshots" / plan.commit
    missing = [f for f in plan.files if not _present(snapshot, f)]
    check_space(cache_dir, sum(f.size for f in missing) - _inflight_bytes(folder), reserve_bytes)
    fetch_all(
        missing,
        lambda f: _fetch_verified(plan, f, cache_dir, token, endpoint),
        lambda f: f.size,
        plan.total_bytes,
        len(plan.files),
        lambda: _inflight_bytes(folder),
        progress,
        max_workers,
    )
    if plan.revision != plan.commit:
        _write_ref(folder, plan.revision, plan.commit)
    return DownloadResult(
        uri=f"hf://{plan.repo_id}",
        revision=plan.revision,
        resolved_revision=plan.commit,
        path=snapshot,
        size_bytes=plan.total_bytes,
        files=len(plan.files),
        seconds=time.perf_counter() - started,
    )
