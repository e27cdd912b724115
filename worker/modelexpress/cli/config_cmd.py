"""`modelexpress config generate | validate | show`: write, check and inspect the configuration."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from modelexpress.cli.commands import help_for
from modelexpress.cli.options import add_config_flags, config_from_args
from modelexpress.config import ConfigError, load_config, render_config_yaml
from modelexpress.errors import UserError
from modelexpress.files import write_text_atomic


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = subparsers.add_parser("config", help=help_for("config"))
    verbs = config.add_subparsers(dest="config_verb", required=True, metavar="VERB")

    generate = verbs.add_parser("generate", help="write every option with its default value")
    generate.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    generate.add_argument("--no-comments", action="store_true", help="leave out the option descriptions")
    generate.add_argument("--force", action="store_true", help="replace --output if it exists")
    generate.set_defaults(handler=_generate)

    validate = verbs.add_parser("validate", help="check a configuration file (with the environment applied)")
    validate.add_argument("file", type=Path, help="YAML configuration file")
    validate.set_defaults(handler=_validate)

    show = verbs.add_parser("show", help="print the effective configuration after all layers")
    add_config_flags(show)
    show.set_defaults(handler=_show)


def json_indent(args: argparse.Namespace) -> int | bool | None:
    """False for human output (YAML, lines); else the JSON indent (`--format json`: None, json-pretty: 2)."""
    chosen = getattr(args, "output_format", "human")
    return False if chosen == "human" else (2 if chosen == "json-pretty" else None)


def _generate(args: argparse.Namespace) -> int:
    indent = json_indent(args)
    text = render_config_yaml(comments=not args.no_comments)
    if indent is not False:  # the same defaults, as JSON (comments have no place there)
        text = json.dumps(yaml.safe_load(render_config_yaml(comments=False)), indent=indent) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    if Path(args.output).is_dir():
        raise UserError(
            f"--output {args.output} is a directory: name the file to write, e.g. {Path(args.output) / 'model-express.yaml'}"
        )
    if Path(args.output).exists() and not args.force:  # as `kubectl create` does: never replace silently
        raise UserError(f"--output {args.output} exists: pass --force to replace it")
    write_text_atomic(args.output, text)
    if not args.quiet:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    indent = json_indent(args)
    try:
        load_config(args.file)
    except ConfigError as exc:
        if indent is not False:
            print(json.dumps({"file": str(args.file), "valid": False, "error": str(exc)}, indent=indent))
        else:
            print(exc, file=sys.stderr)
        return 1
    if indent is not False:
        print(json.dumps({"file": str(args.file), "valid": True, "error": None}, indent=indent))
    else:
        print(f"{args.file}: valid")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    indent = json_indent(args)
    if indent is not False:
        print(json.dumps(config.model_dump(mode="json"), indent=indent))
        return 0
    sys.stdout.write(render_config_yaml(config, comments=False))
    return 0
