"""`modelexpress server`: the seeds' server flags and `--validate-config`."""

from __future__ import annotations

import argparse
import sys

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
    print(
        "modelexpress server: serving is not available in this version yet; "
        "use --validate-config to check a configuration",
        file=sys.stderr,
    )
    return 2
