"""The Redis source registry (`MX_METADATA_BACKEND=redis`, `REDIS_URL`), for users without CRD permissions.

Each worker rank is one hash `mx:v1:source:<worker_id>` that expires `MX_STATUS_TTL_SECS` after its
last refresh (the source refreshes it every TTL/3), so a worker that dies without saying goodbye
disappears on its own: no "flush Redis on redeploy" step. Sorted sets index the records by layout
identity (`mx:v1:identity:<sha256>`) and globally (`mx:v1:sources`), scored by expiry time; readers
drop index entries whose record is gone. The key prefix carries a schema version, so a redeploy that
changes the record format never reads records written by the previous one.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry.base import RegistryUnavailableError, SourceRegistry
from modelexpress.registry.embedded import identity_key
from modelexpress.registry.ranking import Placement, rank_sources

PREFIX = "mx:v1"
ALL_SOURCES = f"{PREFIX}:sources"


def redacted_url(url: str) -> str:
    """`url` with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _source_key(worker_id: str) -> str:
    return f"{PREFIX}:source:{worker_id}"


def _identity_index(identity: WorkerIdentity) -> str:
    return f"{PREFIX}:identity:{hashlib.sha256(identity_key(identity).encode()).hexdigest()[:32]}"


class RedisRegistry(SourceRegistry):
    """Sources in Redis, each record expiring `ttl_seconds` after its last refresh."""

    def __init__(self, url: str, ttl_seconds: float = 3600, timeout: float = 5.0) -> None:
        self.url = url
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
            )
        except ValueError as exc:
            raise RegistryUnavailableError(f"REDIS_URL={redacted_url(url)} is not a Redis URL: {exc}") from None

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except redis.RedisError as exc:
            raise RegistryUnavailableError(
                f"the Redis registry at {redacted_url(self.url)} failed to {what}: {type(exc).__name__}: {exc}; "
                "check REDIS_URL and that Redis is running"
            ) from None

    def publish(self, record: SourceRecord) -> None:
        now = time.time()
        record = record.model_copy(update={"updated_at": now})
        expires = now + self.ttl_ms / 1000
        key = _source_key(record.worker_id)

        def write() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(
                key,
                mapping={"record": record.model_dump_json(), "state": record.state, "node": record.node or ""},
            )
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(_identity_index(record.identity), {record.worker_id: expires})
            pipe.pexpire(_identity_index(record.identity), self.ttl_ms)
            pipe.zadd(ALL_SOURCES, {record.worker_id: expires})
            pipe.execute()

        self._call("record a source", write)

    def _load(self, worker_id: str) -> SourceRecord | None:
        raw = self._call("read a source", lambda: self._redis.hget(_source_key(worker_id), "record"))
        return SourceRecord.model_validate_json(raw) if raw else None

    def set_state(self, worker_id: str, state: str) -> None:
        record = self._load(worker_id)
        if record is None:
            raise KeyError(f"worker {worker_id} is not registered (or its record expired)")
        self.publish(record.model_copy(update={"state": state}))

    def remove(self, worker_id: str) -> None:
        record = self._load(worker_id)

        def delete() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(_source_key(worker_id))
            pipe.zrem(ALL_SOURCES, worker_id)
            if record is not None:
                pipe.zrem(_identity_index(record.identity), worker_id)
            pipe.execute()

        self._call("remove a source", delete)

    def _records(self, index: str) -> list[SourceRecord]:
        def read() -> list[SourceRecord]:
            self._redis.zremrangebyscore(index, "-inf", time.time())
            worker_ids = [str(w) for w in self._redis.zrange(index, 0, -1)]
            if not worker_ids:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for worker_id in worker_ids:
                pipe.hget(_source_key(worker_id), "record")
            found: list[SourceRecord] = []
            gone: list[str] = []
            for worker_id, raw in zip(worker_ids, pipe.execute(), strict=True):
                if raw:
                    found.append(SourceRecord.model_validate_json(raw))
                else:
                    gone.append(worker_id)
            if gone:  # expired before its index entry: tidy the index
                self._redis.zrem(index, *gone)
            return found

        result: list[SourceRecord] = self._call("list sources", read)
        return result

    def find_ready(self, identity: WorkerIdentity, near: Placement | None = None) -> list[SourceRecord]:
        wanted = identity_key(identity)
        records = [
            r
            for r in self._records(_identity_index(identity))
            if r.state == "Ready" and identity_key(r.identity) == wanted
        ]
        return rank_sources(records, near)

    def list_sources(self) -> list[SourceRecord]:
        return sorted(self._records(ALL_SOURCES), key=lambda r: r.worker_id)

    def ping(self) -> None:
        """Raise RegistryUnavailableError unless Redis answers."""
        self._call("answer PING", self._redis.ping)

    def close(self) -> None:
        self._redis.close()
