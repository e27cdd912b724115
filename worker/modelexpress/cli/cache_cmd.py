"""`modelexpress cache download | pull | ls | rm | evict`: the local model cache.

`download` fetches into a directory (what a ModelCache Job runs); `pull` also records the model in
the local cache database. Output `--format human|json|json-pretty`. Exit codes: 0 done, 1 download
failed and may succeed when retried (network, integrity), 2 bad input or invalid source, 3 not found,
4 unauthorized, 5 not enough storage: cache Jobs retry exit 1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelexpress.cache.database import CachedModel
from modelexpress.cache.errors import EXIT_CODES, DownloadError
from modelexpress.cache.sources import ModelSource, parse_source
from modelexpress.cache.transfers import Progress
from modelexpress.cli.commands import help_for
from modelexpress.cli.options import ConfigError, config_from_args
from modelexpress.config.logs import configure_logging
from modelexpress.files import write_text_atomic
from modelexpress.units import size as format_bytes

if TYPE_CHECKING:
    from modelexpress.cache.local import LocalCache
    from modelexpress.config import ModelExpressConfig

FORMATS = ["human", "json", "json-pretty"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = subparsers.add_parser("cache", help=help_for("cache"))
    verbs = cache.add_subparsers(dest="cache_verb", required=True, metavar="VERB")

    for verb, helptext, handler in (
        ("download", "download a model into the cache directory (no database; what cache Jobs run)", _download),
        ("pull", "download a model and record it in the local cache database", _pull),
    ):
        cmd = verbs.add_parser(verb, help=helptext)
        cmd.add_argument("source", help="hf://org/name (or org/name), or an absolute path")
        cmd.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
        cmd.add_argument("--allow-pattern", action="append", help="only files matching this glob (repeatable)")
        cmd.add_argument("--ignore-pattern", action="append", help="skip files matching this glob (repeatable)")
        cmd.add_argument("--result-file", type=Path, help="write the result as JSON here when done")
        cmd.add_argument(
            "--progress-to",
            metavar="NAMESPACE/NAME",
            help="report progress on this ModelCache's status (what cache Jobs do)",
        )
        _common(cmd)
        cmd.set_defaults(handler=handler)

    size = verbs.add_parser("size", help="the bytes a download would fetch, from the source's listing")
    size.add_argument("source", help="hf://org/name, ngc://, s3://, gs:// or az://")
    size.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    size.add_argument("--allow-pattern", action="append", help="only files matching this glob (repeatable)")
    size.add_argument("--ignore-pattern", action="append", help="skip files matching this glob (repeatable)")
    size.add_argument("--result-file", type=Path, help="write the result as JSON here when done")
    _common(size)
    size.set_defaults(handler=_size)

    ls = verbs.add_parser("ls", help="list cached models")
    _common(ls)
    ls.set_defaults(handler=_ls)

    rm = verbs.add_parser("rm", help="delete a cached model's files and forget it")
    rm.add_argument("source")
    rm.add_argument("--revision", help="only this revision (default: every cached revision)")
    _common(rm)
    rm.set_defaults(handler=_rm)

    evict = verbs.add_parser("evict", help="apply the eviction policy now (LRU; pinned and in-use models stay)")
    evict.add_argument("--dry-run", action="store_true", help="only say what would be evicted")
    _common(evict)
    evict.set_defaults(handler=_evict)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="YAML configuration file")
    parser.add_argument("--database-path", "-d", help="SQLite file (database.path)")
    parser.add_argument("--cache-directory", help="model cache directory (cache.directory)")
    parser.add_argument("--log-level", "-l", help="trace, debug, info, warn or error (logging.level)")
    parser.add_argument("--format", default="human", choices=FORMATS)


def _emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.format == "human":
        print(human)
    else:
        print(json.dumps(payload, indent=2 if args.format == "json-pretty" else None, default=str))


class _Bar:
    """A progress bar on a terminal; silence elsewhere (Jobs report progress on the resource)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int, files: int, total_files: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        filled = int(30 * done / total) if total else 30
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done / 2**20:9.1f}/{total / 2**20:.1f} MiB {files}/{total_files} files"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _write_result(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload)
    if str(path).startswith("/dev/"):
        path.write_text(text)  # a device or the termination log: no temporary file beside it
    else:
        write_text_atomic(path, text)


def _failure(args: argparse.Namespace, exc: DownloadError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    if getattr(args, "result_file", None):
        _write_result(args.result_file, {"ok": False, "reason": exc.reason.value, "message": str(exc)})
    return EXIT_CODES[exc.reason]


def _configured(args: argparse.Namespace) -> tuple[ModelExpressConfig, ModelSource] | int:
    """The configuration (logging set up) and the parsed source of a download-like verb, or its exit code."""
    try:
        config = config_from_args(args)
        source = parse_source(args.source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DownloadError as exc:
        return _failure(args, exc)
    configure_logging(config.logging)
    return config, source


def _download(args: argparse.Namespace) -> int:
    configured = _configured(args)
    if isinstance(configured, int):
        return configured
    config, source = configured
    progress: Progress = _Bar()
    if args.progress_to:
        from modelexpress.cache.progress_report import CacheProgressReporter

        namespace, _, name = args.progress_to.partition("/")
        progress = CacheProgressReporter(namespace, name)
    from modelexpress.cache.local import cache_directory, download_source  # hub clients: only when used

    directory = cache_directory(config, source.provider)
    try:
        result = download_source(config, source, args.revision, args.allow_pattern, args.ignore_pattern, progress)
    except DownloadError as exc:
        return _failure(args, exc)
    payload = {
        "ok": True,
        "source": result.uri,
        "revision": result.revision,
        "resolvedRevision": result.resolved_revision,
        "path": str(result.path),
        "relativePath": str(result.path.relative_to(directory)),
        "sizeBytes": result.size_bytes,
        "files": result.files,
        "seconds": round(result.seconds, 3),
    }
    if args.result_file:
        _write_result(args.result_file, payload)
    _emit(
        args,
        payload,
        f"downloaded {result.uri}@{result.resolved_revision[:12]}: {result.files} files, "
        f"{result.size_bytes / 2**20:.1f} MiB in {result.seconds:.1f}s -> {result.path}",
    )
    return 0


def _size(args: argparse.Namespace) -> int:
    """What a ModelCache's sizing Job runs: the source's size with the Job's credentials, as JSON in the
    termination log (the operator never reads the credentials Secret itself)."""
    configured = _configured(args)
    if isinstance(configured, int):
        return configured
    _, source = configured
    from modelexpress.cache.local import source_size  # hub clients: only when used

    try:
        total = source_size(source, args.revision, args.allow_pattern, args.ignore_pattern)
    except DownloadError as exc:
        return _failure(args, exc)
    payload = {"ok": True, "source": source.uri, "revision": args.revision, "sizeBytes": total}
    if args.result_file:
        _write_result(args.result_file, payload)
    _emit(args, payload, f"{source.uri}@{args.revision}: {format_bytes(total)}")
    return 0


def _open(args: argparse.Namespace) -> LocalCache | None:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    configure_logging(config.logging)
    from modelexpress.cache.local import LocalCache

    return LocalCache(config)


def _row(model: CachedModel) -> dict[str, Any]:
    row = asdict(model)
    for key in ("downloaded_at", "last_used_at"):
        row[key] = datetime.fromtimestamp(row[key], UTC).isoformat(timespec="seconds")
    return row


def _pull(args: argparse.Namespace) -> int:
    cache = _open(args)
    if cache is None:
        return 2
    try:
        model = cache.pull(args.source, args.revision, args.allow_pattern, args.ignore_pattern, _Bar())
    except DownloadError as exc:
        return _failure(args, exc)
    finally:
        cache.close()
    if args.result_file:
        _write_result(args.result_file, _row(model))
    _emit(
        args,
        _row(model),
        f"cached {model.uri}@{model.resolved_revision[:12]}: {model.files} files, "
        f"{model.size_bytes / 2**20:.1f} MiB at {model.path}",
    )
    return 0


def _ls(args: argparse.Namespace) -> int:
    cache = _open(args)
    if cache is None:
        return 2
    try:
        models = cache.models()
    finally:
        cache.close()
    rows = [_row(m) for m in models]
    lines = [f"{'MODEL':40} {'REVISION':12} {'SIZE':>10} {'LAST USED':25} PINNED"]
    lines += [
        f"{m.uri:40} {m.resolved_revision[:12]:12} {m.size_bytes / 2**20:9.1f}M {r['last_used_at']:25} {'yes' if m.pinned else ''}"
        for m, r in zip(models, rows, strict=True)
    ]
    _emit(args, rows, "\n".join(lines) if models else "no models cached")
    return 0


def _rm(args: argparse.Namespace) -> int:
    cache = _open(args)
    if cache is None:
        return 2
    try:
        removed = cache.remove(args.source, args.revision)
    except DownloadError as exc:
        return _failure(args, exc)
    finally:
        cache.close()
    if not removed:
        print(f"error: {args.source} is not cached", file=sys.stderr)
        return 3  # not found (1 is for retryable network errors)
    _emit(args, [_row(m) for m in removed], "\n".join(f"removed {m.uri}@{m.revision}" for m in removed))
    return 0


def _evict(args: argparse.Namespace) -> int:
    cache = _open(args)
    if cache is None:
        return 2
    try:
        chosen = cache.evict(dry_run=args.dry_run)
    finally:
        cache.close()
    verb = "would evict" if args.dry_run else "evicted"
    _emit(
        args,
        [{**_row(e.model), "reason": e.reason, "dryRun": args.dry_run} for e in chosen],
        "\n".join(f"{verb} {e.model.uri}@{e.model.revision}: {e.reason}" for e in chosen) or "nothing to evict",
    )
    return 0
