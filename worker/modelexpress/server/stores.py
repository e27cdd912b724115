"""Where the server's models live: the local cache of this machine, or ModelCaches of the cluster.

The gRPC services only talk to a `ModelStore`; `LocalStore` (embedded default) downloads into the
local cache and its SQLite database, `ClusterStore` (server/cluster.py) rides on the ModelCache
machinery and reads files from the cache PVC the server mounts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from modelexpress.cache.database import CachedModel
from modelexpress.cache.local import LocalCache, cache_directory
from modelexpress.cache.sources import ModelSource
from modelexpress.cache.transfers import Progress
from modelexpress.config import ModelExpressConfig


class StoreUnavailableError(RuntimeError):
    """A model is known but its files cannot be read here; the message says why and what to do."""


class ModelStore(Protocol):
    def models(self) -> list[CachedModel]:
        """Every model the store holds (ready to stream)."""

    def find(self, source: ModelSource, revision: str | None = None) -> list[CachedModel]:
        """Cached revisions of one model (all, or those with this revision name)."""

    def ensure(
        self, source: ModelSource, revision: str, allow: list[str] | None, ignore: list[str] | None, progress: Progress
    ) -> CachedModel:
        """Have the model cached (download or wait for it); raises DownloadError with a reason."""

    def files_root(self, model: CachedModel) -> Path:
        """The directory to stream the model's files from; raises StoreUnavailableError."""

    def relative_path(self, model: CachedModel) -> str:
        """The model's directory inside the cache layout (what clients recreate)."""

    def touch(self, model: CachedModel) -> None:
        """Record a use of the model (LRU eviction)."""

    def remove(self, source: ModelSource, revision: str | None) -> list[CachedModel]:
        """Forget the model and free its files; returns what was removed."""

    def directory(self) -> Path:
        """The cache directory (for statistics)."""

    def close(self) -> None: ...


class LocalStore:
    """The embedded default: this machine's cache directory and SQLite database."""

    def __init__(self, config: ModelExpressConfig) -> None:
        self.config = config
        self.cache = LocalCache(config)

    def models(self) -> list[CachedModel]:
        return self.cache.models()

    def find(self, source: ModelSource, revision: str | None = None) -> list[CachedModel]:
        return self.cache.db.find(source.provider, source.name, revision)

    def ensure(
        self, source: ModelSource, revision: str, allow: list[str] | None, ignore: list[str] | None, progress: Progress
    ) -> CachedModel:
        return self.cache.pull(source.uri, revision, allow, ignore, progress)

    def files_root(self, model: CachedModel) -> Path:
        return Path(model.path)

    def relative_path(self, model: CachedModel) -> str:
        try:
            return Path(model.path).relative_to(cache_directory(self.config, model.provider)).as_posix()
        except ValueError:  # recorded under another cache directory: the client uses its own layout
            return ""

    def touch(self, model: CachedModel) -> None:
        self.cache.db.touch(model.provider, model.name, model.revision)

    def remove(self, source: ModelSource, revision: str | None) -> list[CachedModel]:
        return self.cache.remove(source.uri, revision)

    def directory(self) -> Path:
        return self.cache.directory()

    def close(self) -> None:
        self.cache.close()
