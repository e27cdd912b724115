"""What every downloader shares: the result shape, the quota check, resumable attempts with backoff,
verification before the rename, and fetching the missing files in parallel with progress."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from modelexpress.cache.errors import DownloadError, FailureReason

log = logging.getLogger(__name__)
Progress = Callable[[int, int, int, int], None]
"""progress(done_bytes, total_bytes, done_files, total_files)"""
T = TypeVar("T")
ATTEMPTS = 5


@dataclass(frozen=True)
class DownloadResult:
    uri: str
    revision: str
    resolved_revision: str
    path: Path
    size_bytes: int
    files: int
    seconds: float


def check_space(cache_dir: Path, needed: int, reserve: int = 0) -> None:
    """Fail before downloading when `needed` bytes (plus `reserve` kept free) do not fit."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if needed + reserve > free:
        raise DownloadError(
            FailureReason.NO_SPACE,
            f"the download needs {needed} bytes{f' (+{reserve} kept free)' if reserve else ''} "
            f"but {cache_dir} has {free} bytes free",
        )


def stays_inside(name: str) -> bool:
    """Whether a relative file name from elsewhere (a source, a server, a client) stays inside the
    directory it is joined to: not empty, no NUL, not absolute, no `..`, no backslash, no `~`."""
    pure = PurePosixPath(name)
    return (
        bool(name)
        and "\0" not in name
        and not pure.is_absolute()
        and ".." not in pure.parts
        and "\\" not in name
        and not name.startswith("~")
    )


def safe_name(name: str) -> str:
    """`name` if it stays inside the model's directory, else an InvalidSource error."""
    if not stays_inside(name):
        raise DownloadError(FailureReason.INVALID_SOURCE, f"the source lists a file named {name!r}, outside the model")
    return name


def present(path: Path, size: int) -> bool:
    """The final file is there with the expected size (an earlier download completed it)."""
    return path.exists() and path.stat().st_size == size


def partial_bytes(paths: Iterable[Path]) -> int:
    """Bytes in the partial files that exist now (one may be renamed to its final name meanwhile)."""
    total = 0
    for partial in paths:
        with contextlib.suppress(FileNotFoundError):
            total += partial.stat().st_size
    return total


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def attempt_resuming(
    what: str, attempt: Callable[[], None], translate: Callable[[Exception, str], DownloadError]
) -> None:
    """Run `attempt` (which resumes from the partial file) until it succeeds; only network errors are
    retried, with capped exponential backoff, up to ATTEMPTS times."""
    for number in range(1, ATTEMPTS + 1):
        try:
            attempt()
            return
        except Exception as exc:
            error = translate(exc, what)
            if error.reason != FailureReason.NETWORK or number == ATTEMPTS:
                raise error from exc
            log.warning("%s: attempt %d failed (%s); resuming", what, number, exc)
            time.sleep(min(2.0, 0.2 * 2**number))


def discard_unless(partial: Path, problem: str | None, what: str) -> None:
    """Remove the partial file and fail when verification found a `problem`: bad bytes are never left
    behind, not even to resume from."""
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(FailureReason.INTEGRITY, f"{what}: {problem}")


def fetch_all(
    missing: Sequence[T],
    fetch: Callable[[T], None],
    size_of: Callable[[T], int],
    total_bytes: int,
    total_files: int,
    inflight: Callable[[], int],
    progress: Progress | None,
    max_workers: int,
) -> None:
    """Fetch `missing` in parallel; report progress (completed files plus the partial bytes `inflight`
    counts) every 0.2 s and once at the end."""
    done = [total_bytes - sum(size_of(m) for m in missing), total_files - len(missing)]
    lock = threading.Lock()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(0.2):
            with lock:
                base, files = done
            if progress:
                progress(min(total_bytes, base + inflight()), total_bytes, files, total_files)

    def one(item: T) -> None:
        fetch(item)
        with lock:
            done[0] += size_of(item)
            done[1] += 1

    reporter = threading.Thread(target=report, name="mx-download-progress", daemon=True)
    reporter.start()
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(missing) or 1))) as pool:
            for future in [pool.submit(one, m) for m in missing]:
                future.result()
    finally:
        stop.set()
        reporter.join(timeout=1)
    if progress:
        progress(total_bytes, total_bytes, total_files, total_files)
