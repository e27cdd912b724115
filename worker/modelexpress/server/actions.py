"""The ApiService's named actions: JSON in, JSON out, for operations that need no schema of their own.

`ping`, `models`, `status` (one model, or every download in flight), `stats` (the cache as a whole)
and `validate` (re-check cached files against the database and their hashes).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelexpress._proto.modelexpress.v1 import server_pb2
from modelexpress.cache.database import CachedModel
from modelexpress.cache.sources import parse_source
from modelexpress.cache.validate import validate_model

if TYPE_CHECKING:
    from modelexpress.server.app import ModelExpressServer

Action = Callable[[dict[str, Any]], Any]
_STATES = {
    server_pb2.MODEL_STATUS_QUEUED: "queued",
    server_pb2.MODEL_STATUS_DOWNLOADING: "downloading",
    server_pb2.MODEL_STATUS_DOWNLOADED: "downloaded",
    server_pb2.MODEL_STATUS_ERROR: "error",
}


class ActionError(ValueError):
    """The payload does not fit the action; the message says which field and what is expected."""


def _model_row(model: CachedModel) -> dict[str, Any]:
    return {
        "model": model.uri,
        "revision": model.revision,
        "resolvedRevision": model.resolved_revision,
        "sizeBytes": model.size_bytes,
        "files": model.files,
        "lastUsedUnix": int(model.last_used_at),
        "pinned": model.pinned,
    }


def _named(payload: dict[str, Any], required: bool) -> str | None:
    name = payload.get("model")
    if name is None and not required:
        return None
    if not isinstance(name, str):
        raise ActionError('payload field "model" must be a model name such as "hf://org/name"')
    return parse_source(name).uri


def actions(server: ModelExpressServer) -> dict[str, Action]:
    def status(payload: dict[str, Any]) -> Any:
        flights = server.downloads.in_flight()
        downloads = [
            {
                "model": uri,
                "revision": revision,
                "state": _STATES.get(last.status, "queued") if last else "queued",
                "bytesDone": last.bytes_done if last else 0,
                "bytesTotal": last.bytes_total if last else 0,
            }
            for (uri, revision), last in sorted(flights.items())
        ]
        uri = _named(payload, required=False)
        if uri is None:
            return {"downloads": downloads, "streams": sum(server.readers.values())}
        source = parse_source(uri)
        cached = [_model_row(m) for m in server.store.find(source)]
        mine = [d for d in downloads if d["model"] == uri]
        state = "downloading" if mine else "cached" if cached else "not-cached"
        return {"model": uri, "state": state, "revisions": cached, "downloads": mine}

    def stats(_payload: dict[str, Any]) -> Any:
        models = server.store.models()
        directory = server.store.directory()
        directory.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(directory)
        return {
            "models": len(models),
            "totalBytes": sum(m.size_bytes for m in models),
            "pinned": sum(1 for m in models if m.pinned),
            "cacheDirectory": str(directory),
            "freeBytes": disk.free,
            "downloadsInFlight": len(server.downloads.in_flight()),
            "downloadsStarted": server.downloads.started,
            "streams": sum(server.readers.values()),
            "uptimeSeconds": int(time.time() - server.started),
        }

    def validate(payload: dict[str, Any]) -> Any:
        uri = _named(payload, required=False)
        models = server.store.models()
        if uri is not None:
            models = [m for m in models if m.uri == uri]
            if not models:
                raise ActionError(f"{uri} is not cached on the server")
        return [
            {"model": m.uri, "revision": m.revision, "ok": not problems, "problems": problems}
            for m in models
            for problems in [validate_model(m)]
        ]

    return {
        "ping": lambda _p: {"message": "pong"},
        "models": lambda _p: [m.uri for m in server.store.models()],
        "status": status,
        "stats": stats,
        "validate": validate,
    }
