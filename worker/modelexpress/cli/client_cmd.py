"""Client verbs of the ModelExpress server: `health`, `api send`, `model download|list|files|clear`.

Global options come before the verb: `modelexpress --endpoint host:8001 --timeout 30 --format json
model list`. The endpoint defaults to `MODEL_EXPRESS_URL` (then `MODEL_EXPRESS_ENDPOINT`), else
`localhost:8001`. `model download --strategy`: `server` (alias `server-only`) asks the server and
fails in bounded time when it cannot be reached; `direct` downloads here; `fallback` (alias
`smart-fallback`, the default) asks the server and downloads here when it cannot be reached, saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import grpc

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc

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


def default_endpoint() -> str:
    raw = os.environ.get("MODEL_EXPRESS_URL") or os.environ.get("MODEL_EXPRESS_ENDPOINT") or "localhost:8001"
    return raw.removeprefix("http://").removeprefix("grpc://").rstrip("/")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", "-e", default=None, help="server host:port (default $MODEL_EXPRESS_URL or localhost:8001)"
    )
    parser.add_argument("--timeout", "-t", type=float, default=30.0, help="seconds to wait for the server (default 30)")
    parser.add_argument(
        "--output-format", "--format", dest="output_format", default="human", choices=["human", "json", "json-pretty"]
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print only errors")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = subparsers.add_parser("health", help="the server's version, status and uptime")
    health.set_defaults(handler=_health)

    api = subparsers.add_parser("api", help="send a named action with a JSON payload")
    api_verbs = api.add_subparsers(dest="api_verb", required=True, metavar="VERB")
    send = api_verbs.add_parser("send", help="send ACTION (e.g. ping)")
    send.add_argument("action")
    send.add_argument("--payload", help="JSON payload, or - to read it from stdin")
    send.add_argument("--payload-file", help="file holding the JSON payload")
    send.set_defaults(handler=_api_send)

    model = subparsers.add_parser("model", help="models on the server")
    verbs = model.add_subparsers(dest="model_verb", required=True, metavar="VERB")
    download = verbs.add_parser("download", help="have the model cached (on the server, or here)")
    download.add_argument("name", help="hf://org/name, org/name, s3://..., ngc://...")
    download.add_argument("--revision", default="main")
    download.add_argument("--strategy", default="fallback", choices=sorted(STRATEGIES))
    download.set_defaults(handler=_download)
    ls = verbs.add_parser("list", help="models the server has cached")
    ls.add_argument("--detailed", action="store_true")
    ls.set_defaults(handler=_list)
    files = verbs.add_parser("files", help="files of a cached model")
    files.add_argument("name")
    files.add_argument("--revision", default="")
    files.set_defaults(handler=_files)
    clear = verbs.add_parser("clear", help="delete a cached model on the server")
    clear.add_argument("name")
    clear.set_defaults(handler=_clear)


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return grpc.insecure_channel(args.endpoint or default_endpoint())


def _emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.quiet:
        return
    if args.output_format == "human":
        print(human)
    else:
        print(json.dumps(payload, indent=2 if args.output_format == "json-pretty" else None))


def _unreachable(args: argparse.Namespace, exc: grpc.RpcError) -> int:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    endpoint = args.endpoint or default_endpoint()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        print(f"error: the server at {endpoint} cannot be reached ({code.name}): {detail}", file=sys.stderr)
        return 3
    print(f"error: {code.name if code else 'RPC'}: {detail}", file=sys.stderr)
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


def _download(args: argparse.Namespace) -> int:
    strategy = STRATEGIES[args.strategy]
    if strategy != "direct":
        code = _download_via_server(args)
        if code != 3 or strategy == "server":
            return code
        print("the server cannot be reached: downloading directly on this machine", file=sys.stderr)
    from modelexpress.cache.errors import EXIT_CODES, DownloadError
    from modelexpress.cache.local import LocalCache
    from modelexpress.config import load_config

    cache = LocalCache(load_config(None, {}))
    try:
        model = cache.pull(args.name, args.revision)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CODES[exc.reason]
    finally:
        cache.close()
    payload = {"model": model.uri, "status": "downloaded", "resolvedRevision": model.resolved_revision, "via": "direct"}
    _emit(args, payload, f"downloaded {model.uri}@{model.resolved_revision[:12]} directly to {model.path}")
    return 0


def _download_via_server(args: argparse.Namespace) -> int:
    last: server_pb2.ModelStatusUpdate | None = None
    try:
        with _channel(args) as channel:
            grpc.channel_ready_future(channel).result(timeout=min(args.timeout, 10))
            stream = server_pb2_grpc.ModelServiceStub(channel).EnsureModelDownloaded(
                server_pb2.ModelDownloadRequest(model_name=args.name, revision=args.revision)
            )
            for update in stream:
                last = update
                if not args.quiet and sys.stderr.isatty() and update.bytes_total:
                    sys.stderr.write(
                        f"\r{STATUS_NAMES[update.status]} {update.bytes_done / 2**20:.1f}/{update.bytes_total / 2**20:.1f} MiB"
                    )
    except grpc.FutureTimeoutError:
        print(
            f"error: the server at {args.endpoint or default_endpoint()} cannot be reached (no connection)",
            file=sys.stderr,
        )
        return 3
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    if last is None or last.status != server_pb2.MODEL_STATUS_DOWNLOADED:
        reason = last.reason if last else "no status"
        print(
            f"error: {last.message if last else 'the server ended the stream without a result'} [{reason}]",
            file=sys.stderr,
        )
        from modelexpress.cache.errors import exit_code_for

        return exit_code_for(reason)
    payload = {
        "model": last.model_name,
        "status": "downloaded",
        "resolvedRevision": last.resolved_revision,
        "via": "server",
    }
    _emit(args, payload, f"{last.model_name}@{last.resolved_revision[:12]} is cached on the server ({last.message})")
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


def _clear(args: argparse.Namespace) -> int:
    try:
        with _channel(args) as channel:
            reply = server_pb2_grpc.ModelServiceStub(channel).DeleteModel(
                server_pb2.DeleteModelRequest(model_name=args.name), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        return _unreachable(args, exc)
    _emit(args, {"deleted": reply.deleted, "message": reply.message}, reply.message)
    return 0 if reply.deleted else 1
