"""The `modelexpress` commands and the module that implements each, so that a run imports only its own.

A verb module pulls in what it needs (pydantic settings, gRPC stubs, hub clients, torch, NIXL), and
that costs more than most verbs themselves: `--version`, `--help` and `config` must not wait for
the hub client. The global options live here too, since every command's parser starts with them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("modelexpress.cli.config_cmd", "generate, validate and show configuration"),
    "server": ("modelexpress.cli.server_cmd", "run the ModelExpress gRPC server"),
    "worker": ("modelexpress.cli.worker_cmd", "serve tensors to peers, or pull them from peers (NIXL)"),
    "sources": ("modelexpress.cli.sources_cmd", "inspect the source workers recorded for P2P transfers"),
    "cache": ("modelexpress.cli.cache_cmd", "download models and manage the local model cache"),
    "health": ("modelexpress.cli.client_cmd", "the server's version, status and uptime"),
    "api": ("modelexpress.cli.client_cmd", "send a named action with a JSON payload"),
    "model": ("modelexpress.cli.client_cmd", "models on the server (`cache` manages this machine's)"),
}
"""command -> (module with `register(subparsers)` adding it, help line)."""

FORMATS = ["human", "json", "json-pretty"]
# Global options that take a value: the token after them is not the command.
_VALUED = {
    "--endpoint",
    "-e",
    "--timeout",
    "-t",
    "--output-format",
    "--format",
    "--transfer-chunk-size",
    "--cache-path",
}


def help_for(command: str) -> str:
    return COMMANDS[command][1]


def invoked_command(argv: Sequence[str]) -> str | None:
    """The command a command line runs (None for `--help`, `--version` or an unknown word)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUED:
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint", "-e", default=None, help="server host:port (default $MODEL_EXPRESS_URL or localhost:8001)"
    )
    parser.add_argument("--timeout", "-t", type=float, default=None, help="seconds to wait for the server (default 30)")
    parser.add_argument("--output-format", "--format", dest="output_format", default="human", choices=FORMATS)
    parser.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    parser.add_argument(
        "--no-shared-storage",
        action="store_const",
        const=True,
        default=None,
        help="stream the model's files from the server into this machine's cache",
    )
    parser.add_argument(
        "--transfer-chunk-size",
        type=int,
        default=None,
        help="bytes per streamed chunk (default 1 MiB, at most 8 MiB; 32768 is the seeds' default)",
    )
    parser.add_argument("--cache-path", default=None, help="this machine's cache directory (direct/streamed downloads)")
    parser.add_argument("--verbose", "-v", action="count", default=0, help="more logging (-vv for debug)")
