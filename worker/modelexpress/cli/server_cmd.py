"""`modelexpress server`: the seeds' server flags and `--validate-config`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from pydantic import ValidationError

from modelexpress.cli.commands import help_for
from modelexpress.cli.config_cmd import json_indent
from modelexpress.cli.options import add_config_flags, config_from_args
from modelexpress.config import ConfigError
from modelexpress.config.client import ClientSettings
from modelexpress.config.cluster import ClusterServerSettings
from modelexpress.errors import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = subparsers.add_parser("server", help=help_for("server"))
    add_config_flags(server)
    server.add_argument(
        "--mode", choices=["embedded", "cluster"], help="this machine's cache, or ModelCaches (MX_SERVER_MODE)"
    )
    server.add_argument("--validate-config", action="store_true", help="check the effective configuration and exit")
    server.set_defaults(handler=_server)


def _server(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.validate_config:
        indent = json_indent(args)
        if indent is not False:
            print(json.dumps({"valid": True, "host": config.server.host, "port": config.server.port}, indent=indent))
        else:
            print(f"configuration valid: server would listen on {config.server.host}:{config.server.port}")
        return 0
    from modelexpress.config.logs import configure_logging
    from modelexpress.server.app import ModelExpressServer

    configure_logging(config.logging)
    try:
        chunk = ClientSettings().transfer_chunk_size  # the same MODEL_EXPRESS_TRANSFER_CHUNK_SIZE as clients
    except ValidationError as exc:
        print(f"error: MODEL_EXPRESS_TRANSFER_CHUNK_SIZE: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 1
    try:
        cluster = ClusterServerSettings(**({"mode": args.mode} if args.mode else {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: MX_SERVER_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 1
    store, reviewer = None, None
    if cluster.mode == "cluster":
        from modelexpress.kubeclient import kube_api_client
        from modelexpress.server.cluster import ClusterStore
        from modelexpress.tokenreview import TokenReviewer

        api = kube_api_client()
        store = ClusterStore(config, cluster, api)
        if cluster.require_token:
            reviewer = TokenReviewer(api, cluster.token_audiences)
        print(f"cluster mode: ModelCaches in namespace {store.namespace}, files from {store.mount}", flush=True)
    try:
        server = ModelExpressServer(config, chunk_size=chunk, store=store, reviewer=reviewer)
    except UserError:
        raise  # a port in use: main prints it, exit 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server.start()
    print(f"ModelExpress server listening on {config.server.host}:{server.port}", flush=True)
    if server.metrics_port is not None:
        print(f"metrics on http://{config.server.host}:{server.metrics_port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    print("stopped", flush=True)
    return 0
