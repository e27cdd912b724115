"""Command-line flags that override configuration options (the seeds' server flags), shared by verbs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modelexpress.config import ConfigError, ModelExpressConfig, load_config

# flag destination -> dotted option it overrides
_FLAG_OPTIONS = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "database_path": ("database", "path"),
    "cache_directory": ("cache", "directory"),
    "cache_eviction_enabled": ("cache", "eviction", "enabled"),
    "log_level": ("logging", "level"),
    "log_format": ("logging", "format"),
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """`--config` plus one flag per option the seeds expose on the command line."""
    parser.add_argument("--config", "-c", type=Path, help="YAML configuration file")
    parser.add_argument("--host", help="bind address (server.host)")
    parser.add_argument("--port", "-p", type=int, help="gRPC port (server.port)")
    parser.add_argument("--database-path", "-d", help="SQLite file (database.path)")
    parser.add_argument("--cache-directory", help="model cache directory (cache.directory)")
    parser.add_argument(
        "--cache-eviction-enabled",
        nargs="?",
        const="true",
        metavar="BOOL",
        help="enable cache eviction (cache.eviction.enabled); true when given without a value",
    )
    parser.add_argument("--log-level", "-l", help="trace, debug, info, warn or error (logging.level)")
    parser.add_argument("--log-format", help="json, pretty or compact (logging.format)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as a nested mapping of options."""
    overrides: dict[str, Any] = {}
    for dest, path in _FLAG_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        target = overrides
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return overrides


def config_from_args(args: argparse.Namespace) -> ModelExpressConfig:
    """Effective configuration for a verb: its flags over the environment over `--config` over defaults."""
    return load_config(getattr(args, "config", None), overrides_from_args(args))


__all__ = ["ConfigError", "add_config_flags", "config_from_args", "overrides_from_args"]
