"""Entry point of the `modelexpress` console script: builds the parser and dispatches to a verb.

Only the module of the command being run is imported (see cli/commands.py); the other commands get
a parser with their help line, so `--help` still lists them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

import modelexpress
from modelexpress.cli.commands import COMMANDS, add_global_options, invoked_command
from modelexpress.errors import UserError

Handler = Callable[[argparse.Namespace], int]


class _Version(argparse.Action):
    """`--version`, reading the installed version only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: list[str], dest: str, **_: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"modelexpress {modelexpress.__version__}")  # stdout, as `--help` (argparse's exit message is stderr)
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of a command line: the invoked command in full (every command when `argv` is None)."""
    parser = argparse.ArgumentParser(
        prog="modelexpress",
        description="ModelExpress: model caches and peer-to-peer weight transfer for vLLM on Kubernetes.",
    )
    parser.add_argument("--version", action=_Version)
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = invoked_command(argv) if argv is not None else None
    modules = dict.fromkeys(m for name, (m, _) in COMMANDS.items() if argv is None or name == command)
    for module in modules:
        importlib.import_module(module).register(subparsers)
    for name, (_, helptext) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=helptext, add_help=False)  # listed in --help; never run
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
        # -q and -v after the verb too (`modelexpress worker pull ... -q`), as before it.
        if "--quiet" not in leaf._option_string_actions:
            leaf.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="print only errors")
        if "--verbose" not in leaf._option_string_actions:
            leaf.add_argument("--verbose", "-v", action="count", default=argparse.SUPPRESS,
                              help="more logging (-vv for debug)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
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
