"""The local cache's SQLite record (`database.path`): which models are cached, where, how big, last used."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    provider TEXT NOT NULL,
    name TEXT NOT NULL,
    revision TEXT NOT NULL,
    resolved_revision TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    files INTEGER NOT NULL,
    downloaded_at REAL NOT NULL,
    last_used_at REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    in_use INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, name, revision)
);
"""


@dataclass(frozen=True)
class CachedModel:
    provider: str
    name: str
    revision: str
    resolved_revision: str
    path: str
    size_bytes: int
    files: int
    downloaded_at: float
    last_used_at: float
    pinned: bool = False
    in_use: int = 0

    @property
    def uri(self) -> str:
        return self.name if self.provider == "local" else f"{self.provider}://{self.name}"


class CacheDatabase:
    """Models in the local cache, one row per (provider, name, revision). Safe across processes (WAL)."""

    def __init__(self, path: str | Path, wal: bool = True, timeout: float = 30) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False, isolation_level=None)
        if wal:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def record(self, model: CachedModel) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (provider, name, revision) DO UPDATE SET resolved_revision=excluded.resolved_revision, "
                "path=excluded.path, size_bytes=excluded.size_bytes, files=excluded.files, "
                "downloaded_at=excluded.downloaded_at, last_used_at=excluded.last_used_at",
                (
                    model.provider, model.name, model.revision, model.resolved_revision, model.path,
                    model.size_bytes, model.files, model.downloaded_at, model.last_used_at,
                    int(model.pinned), model.in_use,
                ),
            )  # fmt: skip

    def models(self) -> list[CachedModel]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM models ORDER BY provider, name, revision").fetchall()
        return [
            CachedModel(
                provider=r[0], name=r[1], revision=r[2], resolved_revision=r[3], path=r[4], size_bytes=r[5],
                files=r[6], downloaded_at=r[7], last_used_at=r[8], pinned=bool(r[9]), in_use=int(r[10]),
            )
            for r in rows
        ]  # fmt: skip

    def find(self, provider: str, name: str, revision: str | None = None) -> list[CachedModel]:
        return [m for m in self.models() if (m.provider, m.name) == (provider, name) and revision in (None, m.revision)]

    def touch(self, provider: str, name: str, revision: str, when: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE models SET last_used_at=? WHERE provider=? AND name=? AND revision=?",
                (when or time.time(), provider, name, revision),
            )

    def set_pinned(self, provider: str, name: str, pinned: bool) -> int:
        with self._lock:
            return self._db.execute(
                "UPDATE models SET pinned=? WHERE provider=? AND name=?", (int(pinned), provider, name)
            ).rowcount

    def use(self, provider: str, name: str, revision: str, delta: int) -> None:
        """Count a user of the model (+1 when it starts using it, -1 when done): in-use models are never evicted."""
        with self._lock:
            self._db.execute(
                "UPDATE models SET in_use=MAX(0, in_use+?), last_used_at=? WHERE provider=? AND name=? AND revision=?",
                (delta, time.time(), provider, name, revision),
            )

    def forget(self, provider: str, name: str, revision: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM models WHERE provider=? AND name=? AND revision=?", (provider, name, revision)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
