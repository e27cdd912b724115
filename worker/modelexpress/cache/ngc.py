"""Downloads of NVIDIA NGC models (`ngc://org/[team/]model[:version]`).

The API key is taken in the seeds' order: `NGC_API_KEY`, then `NGC_CLI_API_KEY`, then the `apikey`
of `~/.ngc/config` (written by `ngc config set`). The registry API is `NGC_API_URL` (default
`https://api.ngc.nvidia.com/v2`): the version's file list is
`GET /models/<org>[/<team>]/<model>/versions/<version>/files` (`modelFiles`: name and size) and each
file is `GET .../files/<name>`, with the key as a bearer token. The shape follows NGC's public
documentation; this machine has no network to check it against the live service.

Files land under `<cache>/<org>/[<team>/]<model>/<version>/` (default cache `~/.cache/ngc`), each as
`<name>.incomplete` resumed with a Range request after an interruption, checked against the listed
size and renamed.
"""

from __future__ import annotations

import configparser
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx2

from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.sources import ModelSource
from modelexpress.cache.transfers import (
    DownloadResult,
    Progress,
    attempt_resuming,
    check_space,
    discard_unless,
    fetch_all,
    partial_bytes,
    present,
    safe_name,
)

log = logging.getLogger(__name__)
DEFAULT_API = "https://api.ngc.nvidia.com/v2"


def api_key(home: Path | None = None) -> str | None:
    """NGC_API_KEY, else NGC_CLI_API_KEY, else `apikey` in ~/.ngc/config; None when there is none."""
    for name in ("NGC_API_KEY", "NGC_CLI_API_KEY"):
        if os.environ.get(name):
            return os.environ[name]
    config = (home or Path.home()) / ".ngc" / "config"
    if config.exists():
        parser = configparser.ConfigParser()
        parser.read(config)
        for section in parser.sections():
            if parser.has_option(section, "apikey"):
                return parser.get(section, "apikey").strip() or None
    return None


@dataclass(frozen=True)
class NgcFile:
    name: str
    size: int


@dataclass(frozen=True)
class NgcPlan:
    source: ModelSource
    path: str  # org/[team/]model
    version: str
    files: tuple[NgcFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _base() -> str:
    return (os.environ.get("NGC_API_URL") or DEFAULT_API).rstrip("/")


def _headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _check(response: httpx2.Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise DownloadError(FailureReason.UNAUTHORIZED, f"{what}: refused with HTTP {response.status_code}")
    if response.status_code == 404:
        raise DownloadError(FailureReason.NOT_FOUND, f"{what}: HTTP 404")
    if response.status_code >= 400:
        raise DownloadError(FailureReason.NETWORK, f"{what}: HTTP {response.status_code}")


def plan_ngc(source: ModelSource, key: str | None = None) -> NgcPlan:
    """The version's files and sizes (`version` defaults to `latest`)."""
    path, _, version = source.name.partition(":")
    version = version or "latest"
    url = f"{_base()}/models/{quote(path)}/versions/{quote(version)}/files"
    try:
        response = httpx2.get(url, headers=_headers(key), timeout=30, follow_redirects=True)
    except httpx2.HTTPError as exc:
        raise DownloadError(FailureReason.NETWORK, f"{source.uri}: {exc}") from exc
    _check(response, source.uri)
    files = [NgcFile(safe_name(str(f["name"])), int(f.get("size") or 0)) for f in response.json().get("modelFiles", [])]
    if not files:
        raise DownloadError(FailureReason.NOT_FOUND, f"{source.uri}: the version lists no files")
    return NgcPlan(source, path, version, tuple(sorted(files, key=lambda f: f.name)))


def target_directory(cache_dir: Path, plan: NgcPlan) -> Path:
    return cache_dir / plan.path / plan.version


def _fetch(plan: NgcPlan, file: NgcFile, target: Path, key: str | None) -> None:
    what = f"{plan.source.uri}: {file.name}"
    url = f"{_base()}/models/{quote(plan.path)}/versions/{quote(plan.version)}/files/{quote(file.name)}"
    final = target / file.name
    partial = final.with_name(f"{final.name}.incomplete")
    final.parent.mkdir(parents=True, exist_ok=True)

    def attempt() -> None:
        start = partial.stat().st_size if partial.exists() else 0
        headers = _headers(key) | ({"Range": f"bytes={start}-"} if start else {})
        with httpx2.stream("GET", url, headers=headers, timeout=60, follow_redirects=True) as response:
            if response.status_code >= 400:
                response.read()
                _check(response, what)
            resume = start and response.status_code == 206
            with partial.open("ab" if resume else "wb") as out:
                for block in response.iter_bytes(1 << 20):
                    out.write(block)

    attempt_resuming(what, attempt, _translate)
    size = partial.stat().st_size
    discard_unless(partial, f"{size} bytes, NGC listed {file.size}" if file.size and size != file.size else None, what)
    os.replace(partial, final)


def _translate(exc: Exception, what: str) -> DownloadError:
    if isinstance(exc, DownloadError):
        return exc
    return DownloadError(FailureReason.NETWORK, f"{what}: {exc}")


def download_ngc(
    plan: NgcPlan,
    cache_dir: Path,
    key: str | None,
    progress: Progress | None = None,
    max_workers: int = 8,
    reserve_bytes: int = 0,
) -> DownloadResult:
    started = time.perf_counter()
    target = target_directory(cache_dir, plan)
    missing = [f for f in plan.files if not present(target / f.name, f.size)]
    check_space(cache_dir, sum(f.size for f in missing), reserve_bytes)
    fetch_all(
        missing,
        lambda f: _fetch(plan, f, target, key),
        lambda f: f.size,
        plan.total_bytes,
        len(plan.files),
        lambda: partial_bytes(target / f"{f.name}.incomplete" for f in missing),
        progress,
        max_workers,
    )
    return DownloadResult(
        uri=plan.source.uri,
        revision=plan.version,
        resolved_revision=plan.version,
        path=target,
        size_bytes=plan.total_bytes,
        files=len(plan.files),
        seconds=time.perf_counter() - started,
    )
