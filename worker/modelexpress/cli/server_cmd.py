"""`modelexpress server`: the seeds' server flags and `--validate-config`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from modelexpress.cli.options import add_config_flags, config_from_args
from modelexpress.config import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = subparsers.add_parser("server", help="run the ModelExpress gRPC server")
    add_config_flags(server)
    server.add_argument("--validate-config", action="store_true", help="check the effective configuration and exit")
    server.set_defaults(handler=_server)


def _server(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.validate_config:
        print(f"configuration valid: server would listen on {config.server.host}:{config.server.port}")
        return 0
    from modelexpress.config.logs import configure_logging
    from modelexpress.server.app import ModelExpressServer

    configure_logging(config.logging)
    chunk = int(os.environ.get("MODEL_EXPRESS_TRANSFER_CHUNK_SIZE") or 32 << 10)
    try:
        server = ModelExpressServer(config, chunk_size=chunk)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server.start()
    print(f"ModelExpress server listening on {config.server.host}:{server.port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    print("stopped", flush=True)
    return 0
