"""`modelexpress worker serve | pull`: the verbs' arguments. What they run (torch, NIXL, the registry)
lives in `worker_run` and is imported only when a worker verb runs, so other verbs start quickly."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelexpress.cli.commands import help_for


def _serve(args: argparse.Namespace) -> int:
    from modelexpress.cli.worker_run import serve

    return serve(args)


def _pull(args: argparse.Namespace) -> int:
    from modelexpress.cli.worker_run import pull_verb

    return pull_verb(args)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = subparsers.add_parser("worker", help=help_for("worker"))
    verbs = worker.add_subparsers(dest="worker_verb", required=True, metavar="VERB")

    serve = verbs.add_parser("serve", help="load a safetensors model directory into memory and serve it")
    serve.add_argument("model_dir", type=Path, help="directory of *.safetensors files")
    _identity_flags(serve)
    serve.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    serve.add_argument("--ready-file", type=Path, help="write the endpoint here once Ready (for scripts)")
    serve.set_defaults(handler=_serve)

    pull_cmd = verbs.add_parser("pull", help="find a source of the identity and pull its tensors")
    _identity_flags(pull_cmd)
    pull_cmd.add_argument("--model-dir", type=Path, help="safetensors directory: tensor layout and disk fallback")
    pull_cmd.add_argument("--source", action="append", default=[], help="host:port of a source (skips the registry)")
    pull_cmd.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    pull_cmd.add_argument("--serve-after", action="store_true", help="become a source once pulled (until Ctrl-C)")
    pull_cmd.add_argument("--ready-file", type=Path, help="with --serve-after: write the endpoint here once Ready")
    pull_cmd.set_defaults(handler=_pull)


def _identity_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True, help="model identity, e.g. org/name")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--pp", type=int, default=1, help="pipeline-parallel size")
    parser.add_argument("--rank", type=int, default=0, help="global rank of this worker")
    parser.add_argument(
        "--log-level", default=None, help="trace, debug, info, warn or error (default info; -q warn, -v debug)"
    )
