"""The `modelexpress config` and `server --validate-config` verbs, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_EXPRESS_")}
    return subprocess.run(
        [sys.executable, "-m", "modelexpress", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def test_generate_writes_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "model-express.yaml"
    result = _run("config", "generate", "--output", str(out))
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(out.read_text())
    assert data["server"] == {
        "host": "0.0.0.0",
        "port": 8001,
        "metrics_port": None,
        "graceful_shutdown": True,
        "shutdown_timeout_seconds": 30,
    }
    assert data["cache"]["eviction"]["policy"]["unused_threshold"] == "7d"
    assert not list(out.parent.glob("*.tmp")) and not list(out.parent.glob(".*.tmp"))
    valid = _run("config", "validate", str(out))
    assert valid.returncode == 0 and "valid" in valid.stdout


def test_validate_fails_naming_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: 70000\n")
    result = _run("config", "validate", str(bad))
    assert result.returncode != 0
    assert "server.port = 70000" in result.stderr
    server = _run("server", "--config", str(bad), "--validate-config")
    assert server.returncode != 0
    assert "server.port = 70000" in server.stderr


def test_cli_flags_beat_env_beat_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 7000\nlogging:\n  format: compact\n")
    env = {"MODEL_EXPRESS_SERVER_PORT": "7100", "MODEL_EXPRESS_LOGGING_LEVEL": "debug"}
    shown = yaml.safe_load(_run("config", "show", "--config", str(cfg), env=env).stdout)
    assert (shown["server"]["port"], shown["logging"]["level"], shown["logging"]["format"]) == (
        7100,
        "debug",
        "compact",
    )
    shown = yaml.safe_load(_run("config", "show", "--config", str(cfg), "-p", "7200", "-l", "error", env=env).stdout)
    assert (shown["server"]["port"], shown["logging"]["level"]) == (7200, "error")
    ok = _run("server", "--config", str(cfg), "--port", "9001", "--validate-config", env=env)
    assert ok.returncode == 0 and ":9001" in ok.stdout


def test_bad_env_value_is_reported() -> None:
    result = _run("config", "show", env={"MODEL_EXPRESS_SERVER_PORT": "eighty"})
    assert result.returncode == 1
    assert "server.port = 'eighty'" in result.stderr
