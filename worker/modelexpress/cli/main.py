"""Entry point of the `modelexpress` console script: builds the parser and dispatches to a verb."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from modelexpress import __version__
from modelexpress.cli import cache_cmd, client_cmd, config_cmd, server_cmd, sources_cmd, worker_cmd

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelexpress",
        description="ModelExpress: model caches and peer-to-peer weight transfer for vLLM on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"modelexpress {__version__}")
    client_cmd.add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_cmd.register(subparsers)
    server_cmd.register(subparsers)
    worker_cmd.register(subparsers)
    sources_cmd.register(subparsers)
    cache_cmd.register(subparsers)
    client_cmd.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
