"""Entry point of the `modelexpress` console script: builds the parser and dispatches to a verb."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from modelexpress import __version__
from modelexpress.cli import cache_cmd, client_cmd, config_cmd, server_cmd, sources_cmd, worker_cmd
from modelexpress.errors import UserError

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
    _format_everywhere(parser)
    return parser


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.extend(_leaves(child) or [child])
    return found


def _format_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--format` wherever a user types it (`modelexpress --format json health`, `modelexpress health
    --format json`): every verb without its own accepts it, without overriding the global value."""
    for leaf in _leaves(parser):
        if "--format" not in leaf._option_string_actions:
            leaf.add_argument(
                "--output-format", "--format", dest="output_format", default=argparse.SUPPRESS,
                choices=["human", "json", "json-pretty"], help="human (default), json or json-pretty",
            )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "format", "human") == "human" and getattr(args, "output_format", "human") != "human":
        args.format = args.output_format  # verbs with their own --format honour the global one too
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:  # every verb: what the user can fix is one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
