"""The local model cache of one machine: where models go, what the database says, downloads and eviction.

Directory: `cache.directory` when set (`MODEL_EXPRESS_CACHE_DIRECTORY`, YAML or flag), else
`HF_HUB_CACHE`, else `~/.cache/huggingface/hub` (NGC models: `~/.cache/ngc`). The layout is the
Hugging Face hub cache, so vLLM reads it offline with `HF_HUB_CACHE` pointing at the same place.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelexpress.cache.database import CacheDatabase, CachedModel
from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.eviction import Eviction, EvictionPolicy, plan_eviction
from modelexpress.cache.sources import ModelSource, parse_source
from modelexpress.cache.transfers import DownloadResult, Progress
from modelexpress.config import ModelExpressConfig


def cache_directory(config: ModelExpressConfig, provider: str = "hf") -> Path:
    """The cache directory by the documented precedence."""
    if config.cache.directory:
        return Path(config.cache.directory).expanduser()
    if provider == "ngc":
        return Path.home() / ".cache" / "ngc"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path.home() / ".cache" / "huggingface" / "hub"


Fetch = Callable[[Path, Progress | None, int], DownloadResult]
"""Downloads a planned source: (directory, progress, bytes to keep free) -> result."""


def _planned(
    source: ModelSource, revision: str, allow_patterns: list[str] | None, ignore_patterns: list[str] | None
) -> tuple[int, Fetch]:
    """The source's listing with the credentials of this process's environment: the bytes it holds, and
    how to fetch them. Each scheme's client loads here only: `cache ls` needs none of them."""
    from modelexpress.cache import huggingface, ngc, objectstore

    if source.provider == "hf":
        endpoint = os.environ.get("HF_ENDPOINT") or None
        token = os.environ.get("HF_TOKEN") or None
        plan = huggingface.plan_download(source.name, revision, allow_patterns, ignore_patterns, token, endpoint)
        return plan.total_bytes, lambda directory, progress, reserve: huggingface.download(
            plan, directory, token, endpoint, progress, reserve_bytes=reserve
        )
    if source.provider == "ngc":
        key = ngc.api_key()
        listing = ngc.plan_ngc(source, key)
        return listing.total_bytes, lambda directory, progress, reserve: ngc.download_ngc(
            listing, directory, key, progress, reserve_bytes=reserve
        )
    if source.provider in ("s3", "gs", "az"):
        objects = objectstore.plan_objects(source, allow_patterns, ignore_patterns)
        return objects.total_bytes, lambda directory, progress, reserve: objectstore.download_objects(
            objects, directory, progress, reserve_bytes=reserve
        )
    raise DownloadError(FailureReason.INVALID_SOURCE, f"{source.uri}: a local path is used in place, not downloaded")


def download_source(
    config: ModelExpressConfig,
    source: ModelSource,
    revision: str = "main",
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    progress: Progress | None = None,
) -> DownloadResult:
    """Fetch a remote source into its cache directory with the downloader of its scheme (no database:
    what cache Jobs run), keeping `min_free_space_bytes` free."""
    reserve = config.cache.eviction.policy.min_free_space_bytes or 0
    directory = cache_directory(config, source.provider)
    _, fetch = _planned(source, revision, allow_patterns, ignore_patterns)
    return fetch(directory, progress, reserve)


def source_size(
    source: ModelSource,
    revision: str = "main",
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
) -> int:
    """How many bytes `download_source` would fetch (what a ModelCache's sizing Job runs to size its PVC)."""
    return _planned(source, revision, allow_patterns, ignore_patterns)[0]


def eviction_policy(config: ModelExpressConfig) -> EvictionPolicy:
    policy = config.cache.eviction.policy
    return EvictionPolicy(
        unused_threshold_secs=policy.unused_threshold.total_seconds() if policy.unused_threshold else None,
        max_models=policy.max_models,
        max_size_bytes=config.cache.max_size_bytes,
        min_free_space_bytes=policy.min_free_space_bytes,
    )


@dataclass
class LocalCache:
    config: ModelExpressConfig

    def __post_init__(self) -> None:
        self.db = CacheDatabase(self.config.database.path, wal=self.config.database.wal_mode)

    def directory(self, provider: str = "hf") -> Path:
        return cache_directory(self.config, provider)

    def pull(
        self,
        source: str,
        revision: str = "main",
        allow_patterns: list[str] | None = None,
        ignore_patterns: list[str] | None = None,
        progress: Progress | None = None,
    ) -> CachedModel:
        """Download (or find already cached) and record the model; returns its database row."""
        parsed = parse_source(source)
        if parsed.provider == "local":
            return self._record_local(parsed, revision)
        result = download_source(self.config, parsed, revision, allow_patterns, ignore_patterns, progress)
        now = time.time()
        model = CachedModel(
            provider=parsed.provider,
            name=parsed.name,
            revision=result.revision or "latest",  # object stores have no revisions
            resolved_revision=result.resolved_revision,
            path=str(result.path),
            size_bytes=result.size_bytes,
            files=result.files,
            downloaded_at=now,
            last_used_at=now,
        )
        self.db.record(model)
        return model

    def _record_local(self, parsed: ModelSource, revision: str) -> CachedModel:
        root = Path(parsed.name)
        if not root.is_dir():
            raise DownloadError(FailureReason.NOT_FOUND, f"{root} is not a directory")
        files = [p for p in root.rglob("*") if p.is_file()]
        now = time.time()
        model = CachedModel(
            "local",
            str(root),
            revision,
            revision,
            str(root),
            sum(p.stat().st_size for p in files),
            len(files),
            now,
            now,
        )
        self.db.record(model)
        return model

    def models(self) -> list[CachedModel]:
        return self.db.models()

    def remove(self, source: str, revision: str | None = None) -> list[CachedModel]:
        """Delete the model's files (every revision, or one) and forget it; returns what was removed."""
        parsed = parse_source(source)
        removed = []
        for model in self.db.find(parsed.provider, parsed.name, revision):
            self._delete_files(model)
            self.db.forget(model.provider, model.name, model.revision)
            removed.append(model)
        return removed

    def _delete_files(self, model: CachedModel) -> None:
        if model.provider == "local":
            return  # a local directory is the user's, not ours
        snapshot = Path(model.path)
        folder = snapshot.parent.parent  # models--org--name
        others = [m for m in self.db.find(model.provider, model.name) if m.revision != model.revision]
        if model.provider != "hf":
            shutil.rmtree(snapshot, ignore_errors=True)  # <cache>/<scheme>/<bucket>/<prefix>
        elif not others and folder.name.startswith("models--"):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            shutil.rmtree(snapshot, ignore_errors=True)

    def plan_eviction(self, now: float | None = None) -> list[Eviction]:
        directory = self.directory()
        directory.mkdir(parents=True, exist_ok=True)
        return plan_eviction(
            self.db.models(), eviction_policy(self.config), now or time.time(), shutil.disk_usage(directory).free
        )

    def evict(self, dry_run: bool = False) -> list[Eviction]:
        chosen = self.plan_eviction()
        if not dry_run:
            for eviction in chosen:
                self._delete_files(eviction.model)
                self.db.forget(eviction.model.provider, eviction.model.name, eviction.model.revision)
        return chosen

    def close(self) -> None:
        self.db.close()
