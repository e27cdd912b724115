"""Client verbs of the ModelExpress server: `health`, `api send`, `model download|list|files|status|
clear|clear-all|validate|stats`.

Global options come before the verb: `modelexpress --endpoint host:8001 --timeout 30 --format json
model list`; each falls back to its `MODEL_EXPRESS_*` variable (`config/client.py`). `model download
--strategy`: `server` (alias `server-only`) asks the server and fails in bounded time when it cannot be
reached; `direct` downloads here; `fallback` (alias `smart-fallback`, the default) asks the server and
downloads here when it cannot be reached, saying so. With `--no-shared-storage` the files the server
cached are streamed into this machine's cache (`--cache-path`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from pydantic import ValidationError

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc
from modelexpress.cache.database import CachedModel
from modelexpress.cache.errors import EXIT_CODES, DownloadError, exit_code_for
from modelexpress.cache.sources import parse_source
from modelexpress.cli.commands import help_for
from modelexpress.config.client import ClientSettings

if TYPE_CHECKING:
    from modelexpress.config import ModelExpressConfig

STRATEGIES = {
    "server": "server",
    "server-only": "server",
    "direct": "direct",
    "fallback": "fallback",
    "smart-fallback": "fallback",
}
STATUS_NAMES = {
    server_pb2.MODEL_STATUS_QUEUED: "queued",
    server_pb2.MODEL_STATUS_DOWNLOADING: "downloading",
    server_pb2.MODEL_STATUS_DOWNLOADED: "downloaded",
    server_pb2.MODEL_STATUS_ERROR: "error",
}


def client_settings(args: argparse.Namespace) -> ClientSettings:
    """Flags over environment over defaults; a bad value names its flag."""
    flags = {
        "endpoint": args.endpoint,
        "timeout": args.timeout,
        "no_shared_storage": args.no_shared_storage,
        "transfer_chunk_size": args.transfer_chunk_size,
        "cache_directory": args.cache_path,
    }
    try:
        return ClientSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        flag = {"cache_directory": "--cache-path"}.get(field, f"--{field.replace('_', '-')}")
        # The flag when it was given, else the variable the value came from.
        source = flag if flags.get(field) is not None else f"MODEL_EXPRESS_{field.upper()}"
        if field == "endpoint" and flags.get(field) is None:
            source = "MODEL_EXPRESS_URL" if "MODEL_EXPRESS_URL" in os.environ else "MODEL_EXPRESS_ENDPOINT"
        raise SystemExit(f"error: {source}={first['input']!r}: {first['msg']}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = subparsers.add_parser("health", help=help_for("health"))
    health.set_defaults(handler=_prepare(_health))

    api = subparsers.add_parser("api", help=help_for("api"))
    api_verbs = api.add_subparsers(dest="api_verb", required=True, metavar="VERB")
    send = api_verbs.add_parser("send", help="send ACTION (ping, models, status, stats, validate)")
    send.add_argument("action")
    send.add_argument("--payload", help="JSON payload, or - to read it from stdin")
    send.add_argument("--payload-file", help="file holding the JSON payload")
    send.set_defaults(handler=_prepare(_api_send))

    model = subparsers.add_parser("model", help=help_for("model"))
    verbs = model.add_subparsers(dest="model_verb", required=True, metavar="VERB")
    download = verbs.add_parser("download", help="have the model cached (on the server, or here)")
    download.add_argument("name", help="hf://org/name, org/name, s3://..., ngc://...")
    download.add_argument("--provider", choices=["hf", "huggingface", "ngc", "s3", "gs", "az"], default=None,
                          help="provider of a bare NAME (default: Hugging Face)")  # fmt: skip
    download.add_argument("--revision", default="main")
    download.add_argument("--strategy", default="fallback", choices=sorted(STRATEGIES))
    download.set_defaults(handler=_prepare(_download))
    ls = verbs.add_parser("list", help="models the server has cached")
    ls.add_argument("--detailed", action="store_true")
    ls.set_defaults(handler=_prepare(_list))
    files = verbs.add_parser("files", help="files of a cached model")
    files.add_argument("name")
    files.add_argument("--revision", default="")
    files.set_defaults(handler=_prepare(_files))
    status = verbs.add_parser("status", help="a model's state on the server, or every download in flight")
    status.add_argument("name", nargs="?")
    status.set_defaults(handler=_prepare(_status))
    clear = verbs.add_parser("clear", help="delete a cached model on the server")
    clear.add_argument("name")
    clear.set_defaults(handler=_prepare(_clear))
    clear_all = verbs.add_parser("clear-all", help="delete every model cached on the server")
    clear_all.add_argument("--yes", action="store_true", help="really delete them all")
    clear_all.set_defaults(handler=_prepare(_clear_all))
    validate = verbs.add_parser("validate", help="re-check cached files (sizes, hashes) on the server")
    validate.add_argument("name", nargs="?")
    validate.set_defaults(handler=_prepare(_validate))
    stats = verbs.add_parser("stats", help="the server's cache: models, bytes, free space, activity")
    stats.set_defaults(handler=_prepare(_stats))


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return grpc.insecure_channel(args.settings.endpoint, options=[("grpc.max_receive_message_length", 16 << 20)])


def _prepare(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Resolve the client settings and logging once, before any verb runs."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        args.settings = client_settings(args)
        args.timeout = args.settings.timeout
        if args.verbose:  # the same log format as the worker verbs
            from modelexpress.config import LoggingSettings
            from modelexpress.config.logs import configure_logging

            configure_logging(LoggingSettings(level="debug" if args.verbose > 1 else "info", format="compact"))
        return handler(args)

    return wrapped


def _auth(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    token = args.settings.bearer_token()
    return [("authorization", f"Bearer {token}")] if token else None


def _emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.quiet:
        return
    if args.output_format == "human":
        print(human)
    else:
        print(json.dumps(payload, indent=2 if args.output_format == "json-pretty" else None))


def _unreachable(args: argparse.Namespace, exc: grpc.RpcError, fatal: bool = True) -> int:
    """Report an RPC failure; an unreachable server is an `error:` only when the command stops on it."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    endpoint = args.settings.endpoint
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        if fatal:
            print(f"error: the server at {endpoint} cannot be reached ({code.name}): {detail}", file=sys.stderr)
        return 3
    print(f"error: {code.name if code else 'RPC'}: {detail}", file=sys.stderr)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return 4  # as for a download refused for credentials
    return 1 if code != grpc.StatusCode.INVALID_ARGUMENT else 2


def _health(args: argparse.Namespace) -> int:
    try:
        with _channel(args) as channel:
            reply = server_pb2_grpc.HealthServiceStub(channel).GetHealth(
                server_pb2.HealthRequest(), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    payload = {"version": reply.version, "status": reply.status, "uptimeSeconds": reply.uptime_seconds}
    _emit(args, payload, f"{reply.status}: version {reply.version}, up {reply.uptime_seconds}s")
    return 0


def _api_send(args: argparse.Namespace) -> int:
    raw = args.payload
    if raw == "-":
        raw = sys.stdin.read()
    elif args.payload_file:
        with open(args.payload_file, encoding="utf-8") as f:
            raw = f.read()
    if raw:
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            print(f"error: --payload is not JSON: {exc}", file=sys.stderr)
            return 2
    try:
        with _channel(args) as channel:
            reply = server_pb2_grpc.ApiServiceStub(channel).SendRequest(
                server_pb2.ApiRequest(id=os.urandom(4).hex(), action=args.action, payload=(raw or "").encode()),
                timeout=args.timeout,
            )
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    if not reply.success:
        print(f"error: {reply.error}", file=sys.stderr)
        return 1
    data = json.loads(reply.data) if reply.data else None
    _emit(args, data, json.dumps(data))
    return 0


def _model_name(args: argparse.Namespace) -> str:
    provider = getattr(args, "provider", None)
    if provider is None or "://" in args.name:
        return str(args.name)
    return f"{'hf' if provider == 'huggingface' else provider}://{args.name}"


def _local_config(settings: ClientSettings) -> ModelExpressConfig:
    from modelexpress.config import load_config  # the full settings model: only for local downloads

    overrides = {"cache": {"directory": settings.cache_directory}} if settings.cache_directory else {}
    return load_config(None, overrides)


def _download(args: argparse.Namespace) -> int:
    strategy = STRATEGIES[args.strategy]
    name = _model_name(args)
    if strategy != "direct":
        code, update = _ensure_on_server(args, name, fatal=strategy == "server")
        if code == 0 and update is not None:
            if args.settings.no_shared_storage:
                return _receive(args, name, update)
            payload = {"model": update.model_name, "status": "downloaded",
                       "resolvedRevision": update.resolved_revision, "via": "server"}  # fmt: skip
            _emit(args, payload, f"{update.model_name}@{update.resolved_revision[:12]} is cached on the server "
                                 f"({update.message})")  # fmt: skip
            return 0
        if code != 3 or strategy == "server":
            return code
        print(f"note: the server at {args.settings.endpoint} cannot be reached: downloading directly on this machine",
              file=sys.stderr)  # fmt: skip
    from modelexpress.cache.local import LocalCache  # hub clients: only when used

    cache = LocalCache(_local_config(args.settings))
    try:
        model = cache.pull(name, args.revision)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CODES[exc.reason]
    finally:
        cache.close()
    payload = {"model": model.uri, "status": "downloaded", "resolvedRevision": model.resolved_revision,
               "via": "direct", "path": model.path}  # fmt: skip
    _emit(args, payload, f"downloaded {model.uri}@{model.resolved_revision[:12]} directly to {model.path}")
    return 0


def _ensure_on_server(
    args: argparse.Namespace, name: str, fatal: bool = True
) -> tuple[int, server_pb2.ModelStatusUpdate | None]:
    """Have the server download the model; with `fatal=False` an unreachable server is left to the caller."""
    last: server_pb2.ModelStatusUpdate | None = None
    try:
        with _channel(args) as channel:
            grpc.channel_ready_future(channel).result(timeout=min(args.timeout, 10))
            stream = server_pb2_grpc.ModelServiceStub(channel).EnsureModelDownloaded(
                server_pb2.ModelDownloadRequest(model_name=name, revision=args.revision), metadata=_auth(args)
            )
            for update in stream:
                last = update
                if not args.quiet and sys.stderr.isatty() and update.bytes_total:
                    sys.stderr.write(
                        f"\r{STATUS_NAMES[update.status]} {update.bytes_done / 2**20:.1f}/{update.bytes_total / 2**20:.1f} MiB"
                    )
    except grpc.FutureTimeoutError:
        if fatal:
            print(f"error: the server at {args.settings.endpoint} cannot be reached (no connection)", file=sys.stderr)
        return 3, None
    except grpc.RpcError as exc:
        return _unreachable(args, exc, fatal), None
    if last is None or last.status != server_pb2.MODEL_STATUS_DOWNLOADED:
        reason = last.reason if last else "no status"
        message = last.message if last else "the server ended the stream without a result"
        print(f"error: {message} [{reason}]", file=sys.stderr)
        return exit_code_for(reason), None
    return 0, last


def _receive(args: argparse.Namespace, name: str, update: server_pb2.ModelStatusUpdate) -> int:
    """Stream what the server cached into this machine's cache and record it there."""
    config = _local_config(args.settings)
    from modelexpress.cache.local import cache_directory  # hub clients: only when a model is received
    from modelexpress.client.receive import StreamError, receive_model

    directory = cache_directory(config, parse_source(name).provider)
    retries = 2 if args.settings.max_retries is None else args.settings.max_retries

    def progress(done: int, total: int) -> None:
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write(f"\rreceiving {done / 2**20:.1f}/{total / 2**20:.1f} MiB")

    try:
        with _channel(args) as channel:
            got = receive_model(channel, name, args.revision, directory,
                                args.settings.transfer_chunk_size, args.timeout, retries, progress)  # fmt: skip
    except (StreamError, DownloadError) as exc:
        print(f"error: receiving {name} from the server failed: {exc}; run the command again to resume",
              file=sys.stderr)  # fmt: skip
        return 1
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    from modelexpress.cache.local import LocalCache

    cache = LocalCache(config)
    try:
        now = time.time()
        provider, _, model_name = got.uri.partition("://")
        cache.db.record(CachedModel(provider, model_name, args.revision, got.resolved_revision, str(got.path),
                                    got.size_bytes, got.files, now, now))  # fmt: skip
    finally:
        cache.close()
    payload = {"model": got.uri, "status": "downloaded", "resolvedRevision": got.resolved_revision,
               "via": "server-stream", "path": str(got.path), "receivedBytes": got.received_bytes,
               "chunkSize": args.settings.transfer_chunk_size}  # fmt: skip
    rate = got.received_bytes / got.seconds / 1e6 if got.seconds else 0.0
    _emit(args, payload, f"received {got.uri}@{got.resolved_revision[:12]} from the server into {got.path} "
                         f"({got.received_bytes} bytes, {rate:.1f} MB/s)")  # fmt: skip
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        with _channel(args) as channel:
            reply = server_pb2_grpc.ModelServiceStub(channel).ListModels(
                server_pb2.ListModelsRequest(), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    rows = [
        {"model": m.model_name, "revision": m.revision, "resolvedRevision": m.resolved_revision,
         "sizeBytes": m.size_bytes, "files": m.files, "pinned": m.pinned}
        for m in reply.models
    ]  # fmt: skip
    lines = [
        f"{r['model']}@{r['revision']}" + (f"  {r['sizeBytes']} bytes, {r['files']} files" if args.detailed else "")
        for r in rows
    ]
    _emit(args, rows, "\n".join(lines) or "no models cached on the server")
    return 0


def _files(args: argparse.Namespace) -> int:
    try:
        with _channel(args) as channel:
            reply = server_pb2_grpc.ModelServiceStub(channel).ListModelFiles(
                server_pb2.ModelFilesRequest(model_name=args.name, revision=args.revision), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    rows = [{"path": f.path, "size": f.size} for f in reply.files]
    _emit(args, rows, "\n".join(f"{r['size']:>12}  {r['path']}" for r in rows))
    return 0


def _delete(args: argparse.Namespace, channel: grpc.Channel, name: str) -> server_pb2.DeleteModelResponse:
    reply: server_pb2.DeleteModelResponse = server_pb2_grpc.ModelServiceStub(channel).DeleteModel(
        server_pb2.DeleteModelRequest(model_name=name), timeout=args.timeout, metadata=_auth(args)
    )
    return reply


def _clear(args: argparse.Namespace) -> int:
    try:
        with _channel(args) as channel:
            reply = _delete(args, channel, args.name)
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    _emit(args, {"deleted": reply.deleted, "message": reply.message}, reply.message)
    return 0 if reply.deleted else 1


def _clear_all(args: argparse.Namespace) -> int:
    if not args.yes:
        print("error: clear-all deletes every model cached on the server; add --yes to confirm", file=sys.stderr)
        return 2
    results = []
    try:
        with _channel(args) as channel:
            listing = server_pb2_grpc.ModelServiceStub(channel).ListModels(
                server_pb2.ListModelsRequest(), timeout=args.timeout
            )
            for name in sorted({m.model_name for m in listing.models}):
                try:
                    reply = _delete(args, channel, name)
                    results.append({"model": name, "deleted": reply.deleted, "message": reply.message})
                except grpc.RpcError as exc:
                    if not isinstance(exc, grpc.Call) or exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    results.append({"model": name, "deleted": False, "message": exc.details()})
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    kept = [r for r in results if not r["deleted"]]
    human = f"removed {len(results) - len(kept)} model(s)" + "".join(
        f"\nkept {r['model']}: {r['message']}" for r in kept
    )
    _emit(args, results, human)
    return 1 if kept else 0


def _action(args: argparse.Namespace, action: str, payload: dict[str, Any]) -> tuple[int, Any]:
    try:
        with _channel(args) as channel:
            reply = server_pb2_grpc.ApiServiceStub(channel).SendRequest(
                server_pb2.ApiRequest(id=os.urandom(4).hex(), action=action, payload=json.dumps(payload).encode()),
                timeout=args.timeout,
            )
    except grpc.RpcError as exc:
        return _unreachable(args, exc), None
    if not reply.success:
        print(f"error: {reply.error}", file=sys.stderr)
        return 1, None
    return 0, json.loads(reply.data)


def _status(args: argparse.Namespace) -> int:
    code, data = _action(args, "status", {"model": args.name} if args.name else {})
    if code:
        return code
    if args.name is None:
        lines = [f"{d['model']}@{d['revision']}: {d['state']} {d['bytesDone']}/{d['bytesTotal']} bytes"
                 for d in data["downloads"]]  # fmt: skip
        _emit(args, data, "\n".join(lines) or f"no downloads in flight; {data['streams']} stream(s) open")
        return 0
    lines = [f"{data['model']}: {data['state']}"]
    lines += [f"  {r['revision']} -> {r['resolvedRevision'][:12]}: {r['sizeBytes']} bytes, {r['files']} files"
              for r in data["revisions"]]  # fmt: skip
    lines += [f"  downloading {d['bytesDone']}/{d['bytesTotal']} bytes" for d in data["downloads"]]
    _emit(args, data, "\n".join(lines))
    return 0


def _validate(args: argparse.Namespace) -> int:
    code, data = _action(args, "validate", {"model": args.name} if args.name else {})
    if code:
        return code
    lines = [f"{r['model']}@{r['revision']}: " + ("ok" if r["ok"] else "; ".join(r["problems"])) for r in data]
    _emit(args, data, "\n".join(lines) or "no models cached on the server")
    return 0 if all(r["ok"] for r in data) else 1


def _stats(args: argparse.Namespace) -> int:
    code, data = _action(args, "stats", {})
    if code:
        return code
    human = (
        f"{data['models']} model(s), {data['totalBytes']} bytes in {data['cacheDirectory']} "
        f"({data['freeBytes']} bytes free); {data['downloadsInFlight']} download(s) in flight, "
        f"{data['streams']} stream(s) open; up {data['uptimeSeconds']}s"
    )
    _emit(args, data, human)
    return 0
