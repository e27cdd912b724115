"""The embedded source registry: a SQLite file shared by the worker processes of one machine."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry.base import RegistryUnavailableError, SourceRegistry
from modelexpress.registry.ranking import Placement, rank_sources

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    worker_id TEXT PRIMARY KEY,
    identity_key TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL,
    node TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sources_by_identity ON sources (identity_key, state);
"""


def identity_key(identity: WorkerIdentity) -> str:
    return json.dumps(identity.layout_key())


class EmbeddedRegistry(SourceRegistry):
    """Sources in one SQLite file (WAL mode: readers never block the writer)."""

    def __init__(self, path: str | Path, ttl_seconds: float = 3600) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise RegistryUnavailableError(
                f"MX_REGISTRY_PATH={self.path} is a directory: give the registry's file, e.g. {self.path / 'sources.db'}"
            )
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryUnavailableError(f"MX_REGISTRY_PATH={self.path} cannot be opened: {exc}") from None
        self._prepare(deadline=time.monotonic() + 30)

    def _prepare(self, deadline: float) -> None:
        """WAL mode and the schema. The ranks of one instance open a new file at the same moment, and
        switching the journal mode is refused (not waited for) while another connection does it."""
        delay = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def publish(self, record: SourceRecord) -> None:
        record = record.model_copy(update={"updated_at": time.time()})
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sources (worker_id, identity_key, record, state, node, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.worker_id,
                    identity_key(record.identity),
                    record.model_dump_json(),
                    record.state,
                    record.node,
                    record.updated_at,
                ),
            )

    def set_state(self, worker_id: str, state: str) -> None:
        with self._lock:
            row = self._db.execute("SELECT record FROM sources WHERE worker_id = ?", (worker_id,)).fetchone()
        if row is None:
            raise KeyError(f"worker {worker_id} is not registered")
        record = SourceRecord.model_validate_json(row[0])
        self.publish(record.model_copy(update={"state": state}))

    def remove(self, worker_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sources WHERE worker_id = ?", (worker_id,))

    def find_ready(self, identity: WorkerIdentity, near: Placement | None = None) -> list[SourceRecord]:
        cutoff = time.time() - self.ttl
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM sources WHERE identity_key = ? AND state = 'Ready' AND updated_at >= ? "
                "ORDER BY updated_at DESC",
                (identity_key(identity), cutoff),
            ).fetchall()
        return rank_sources((SourceRecord.model_validate_json(r[0]) for r in rows), near)

    def list_sources(self) -> list[SourceRecord]:
        return self.all()

    def all(self) -> list[SourceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM sources ORDER BY worker_id").fetchall()
        return [SourceRecord.model_validate_json(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
