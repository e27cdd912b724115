"""Log formats (json, pretty, compact), the TRACE level, and masking of secret values."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelexpress.config import LoggingSettings
from modelexpress.config.logs import TRACE, configure_logging


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_lines_carry_context() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json", level="debug"), stream=stream)
    logging.getLogger("modelexpress.test").info("pulled %d tensors", 7, extra={"model": "m/x"})
    entry = json.loads(stream.getvalue().strip())
    assert entry["message"] == "pulled 7 tensors"
    assert entry["level"] == "info"
    assert entry["logger"] == "modelexpress.test"
    assert entry["model"] == "m/x"


def test_compact_and_pretty_and_levels() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="compact", level="warn"), stream=stream)
    log = logging.getLogger("modelexpress.test")
    log.info("hidden")
    log.warning("shown")
    assert stream.getvalue().strip() == "W modelexpress.test: shown"

    stream = io.StringIO()
    configure_logging(LoggingSettings(format="pretty", level="trace", structured=True), stream=stream)
    log.log(TRACE, "deep", extra={"rank": 3})
    line = stream.getvalue().strip()
    assert "TRACE modelexpress.test: deep rank=3" in line


def test_secrets_never_reach_the_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    log_file = tmp_path / "logs" / "mx.log"
    handler = configure_logging(LoggingSettings(format="json", file=str(log_file)))
    logging.getLogger("modelexpress.test").info("using token %s", "hf_supersecretvalue")
    handler.flush()
    text = log_file.read_text()
    assert "hf_supersecretvalue" not in text
    assert "***" in text


def test_http_clients_log_per_request_lines_only_in_debug_runs() -> None:
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="compact", level="info"), stream=stream)
    logging.getLogger("httpx2").info('HTTP Request: GET https://hub/api/models/org/x "HTTP/1.1 200 OK"')
    logging.getLogger("modelexpress.test").info("downloaded")
    assert stream.getvalue() == "I modelexpress.test: downloaded\n"
    configure_logging(LoggingSettings(format="compact", level="debug"), stream=stream)
    logging.getLogger("httpx2").info("HTTP Request: GET")
    assert "HTTP Request: GET" in stream.getvalue()
    configure_logging(LoggingSettings(format="compact", level="info"), stream=io.StringIO())


def test_tokens_shaped_like_jwts_are_masked_in_any_log_line() -> None:
    import logging as _logging

    from modelexpress.config.logs import SecretMaskingFilter

    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik1Y.eyJhdWQiOlsibW9kZWxleHByZXNzIl0sImV4cCI6MTc.c2lnbmF0dXJlLXBhcnQ"
    record = _logging.LogRecord(
        "kubernetes.client.rest", _logging.DEBUG, __file__, 1, "body: %s", (f'{{"token":"{token}"}}',), None
    )
    SecretMaskingFilter({}).filter(record)
    assert token not in record.getMessage() and '"token":"***"' in record.getMessage()
