"""Logging set-up from `LoggingSettings`: json, pretty or compact lines, to standard error or a file.

Adds a TRACE level below DEBUG (the seeds' `trace`), and a filter that masks known secret values
(tokens, keys) wherever they would appear in a message, so that a token never reaches a log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelexpress.config.settings import LoggingSettings

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

# Environment variables whose values are credentials; their values are masked in every log record.
SECRET_ENV_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "NGC_API_KEY",
    "NGC_CLI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_ACCOUNT_KEY",
    "AZURE_CLIENT_SECRET",
)
_installed: logging.Handler | None = None
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


class SecretMaskingFilter(logging.Filter):
    """Replaces the values of secret environment variables (at least 4 characters) and anything shaped
    like a JSON Web Token (ServiceAccount tokens) with `***`."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        super().__init__()
        env = os.environ if environ is None else environ
        self._secrets = sorted({env[k] for k in SECRET_ENV_VARS if len(env.get(k, "")) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _JWT.sub("***", message)
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`pretty`: time, padded level, logger, message; `compact`: level initial and message only."""

    def __init__(self, compact: bool, structured: bool) -> None:
        super().__init__()
        self._compact = compact
        self._structured = structured

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if self._structured:
            extra = " ".join(f"{k}={v}" for k, v in _context(record).items())
            message = f"{message} {extra}" if extra else message
        if self._compact:
            line = f"{record.levelname[0]} {record.name}: {message}"
        else:
            stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            line = f"{stamp} {record.levelname:<5} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(settings: LoggingSettings, stream: Any = None) -> logging.Handler:
    """Install one handler on the root logger per the settings; returns it (tests read it)."""
    handler: logging.Handler
    if settings.file is not None:
        path = Path(settings.file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(compact=settings.format == "compact", structured=settings.structured))
    handler.addFilter(SecretMaskingFilter())
    global _installed  # noqa: PLW0603 - one process-wide handler, replaced on reconfiguration
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    _installed = handler
    root.addHandler(handler)
    root.setLevel(LEVELS[settings.level])
    # HTTP clients log one INFO line per request (hundreds in a download); keep them for debug runs.
    for chatty in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3"):
        logging.getLogger(chatty).setLevel(
            logging.DEBUG if LEVELS[settings.level] <= logging.DEBUG else logging.WARNING
        )
    return handler


def configure_vllm_logging() -> None:
    """Give the `modelexpress` loggers a handler of their own in a vLLM process (`modelexpress.configure_vllm_logging`).

    vLLM configures only its own loggers: without this, what the loader decides (peers or disk, and
    why) would never reach the pod's log. A process that configured logging itself keeps its own."""
    package = logging.getLogger("modelexpress")
    if package.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter(compact=False, structured=False))
    handler.addFilter(SecretMaskingFilter())
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
