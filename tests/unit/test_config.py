"""Layered configuration: defaults < YAML < MODEL_EXPRESS_* env < CLI, durations, validation messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from modelexpress.config import (
    ConfigError,
    format_duration,
    iter_options,
    load_config,
    parse_duration,
    render_config_yaml,
)

SEED_OPTIONS = {
    "server.host",
    "server.port",
    "database.path",
    "cache.directory",
    "cache.max_size_bytes",
    "cache.eviction.enabled",
    "cache.eviction.policy.type",
    "cache.eviction.policy.unused_threshold",
    "cache.eviction.policy.max_models",
    "cache.eviction.policy.min_free_space_bytes",
    "cache.eviction.check_interval",
    "logging.level",
    "logging.format",
    "logging.file",
    "logging.structured",
    # the README's longer list
    "server.graceful_shutdown",
    "server.shutdown_timeout_seconds",
    "database.wal_mode",
    "database.pool_size",
    "database.connection_timeout_seconds",
}


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def test_defaults_match_the_seeds() -> None:
    config = load_config(environ={})
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 8001
    assert config.database.path == "./models.db"
    # The seeds document ./cache; unset here, the cache follows HF_HUB_CACHE (then ~/.cache/huggingface/hub),
    # the place vLLM reads offline, and config show / generate / docs say so instead of a path never used.
    assert config.cache.directory is None
    assert config.cache.max_size_bytes is None
    assert config.cache.eviction.enabled is True
    assert config.cache.eviction.policy.type == "lru"
    assert config.cache.eviction.policy.unused_threshold == timedelta(days=7)
    assert config.cache.eviction.check_interval == timedelta(hours=1)
    assert config.logging.level == "info"
    assert config.logging.format == "pretty"
    assert config.logging.file is None
    assert config.logging.structured is False


def test_generated_file_lists_every_seed_option_and_round_trips(tmp_path: Path) -> None:
    text = render_config_yaml()
    data = yaml.safe_load(text)
    flat = _flatten(data)
    assert set(flat) >= SEED_OPTIONS
    assert flat["cache.eviction.policy.unused_threshold"] == "7d"
    assert flat["cache.eviction.check_interval"] == "1h"
    assert flat["cache.max_size_bytes"] is None
    # every option the loader knows is in the file, and nothing else
    assert set(flat) == {o.dotted for o in iter_options()}
    path = tmp_path / "generated.yaml"
    path.write_text(text)
    assert load_config(path, environ={}) == load_config(environ={})


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 7000\n  host: 10.0.0.1\nlogging:\n  level: warn\n")
    from_file = load_config(path, environ={})
    assert (from_file.server.port, from_file.server.host, from_file.logging.level) == (7000, "10.0.0.1", "warn")
    assert from_file.database.path == "./models.db"  # untouched options keep their defaults

    env = {"MODEL_EXPRESS_SERVER_PORT": "7100", "MODEL_EXPRESS_LOG_LEVEL": "debug"}
    from_env = load_config(path, environ=env)
    assert (from_env.server.port, from_env.server.host, from_env.logging.level) == (7100, "10.0.0.1", "debug")

    from_cli = load_config(path, overrides={"server": {"port": 7200}}, environ=env)
    assert (from_cli.server.port, from_cli.server.host, from_cli.logging.level) == (7200, "10.0.0.1", "debug")


def test_both_env_spellings_of_logging_work_and_must_agree() -> None:
    assert load_config(environ={"MODEL_EXPRESS_LOG_LEVEL": "DEBUG"}).logging.level == "debug"
    assert load_config(environ={"MODEL_EXPRESS_LOGGING_LEVEL": "error"}).logging.level == "error"
    assert load_config(environ={"MODEL_EXPRESS_LOG_FORMAT": "json"}).logging.format == "json"
    assert load_config(environ={"MODEL_EXPRESS_LOGGING_FORMAT": "compact"}).logging.format == "compact"
    with pytest.raises(ConfigError, match=r"logging\.level: environment variables disagree"):
        load_config(environ={"MODEL_EXPRESS_LOG_LEVEL": "debug", "MODEL_EXPRESS_LOGGING_LEVEL": "info"})


def test_nested_env_names_and_seconds_aliases() -> None:
    config = load_config(
        environ={
            "MODEL_EXPRESS_CACHE_EVICTION_ENABLED": "false",
            "MODEL_EXPRESS_CACHE_EVICTION_POLICY_MAX_MODELS": "5",
            "MODEL_EXPRESS_CACHE_EVICTION_CHECK_INTERVAL_SECONDS": "600",
            "MODEL_EXPRESS_CACHE_MAX_SIZE_BYTES": "1000",
            "MODEL_EXPRESS_DATABASE_PATH": "/data/models.db",
            "MODEL_EXPRESS_URL": "unrelated:8001",  # client settings are not server options
        }
    )
    assert config.cache.eviction.enabled is False
    assert config.cache.eviction.policy.max_models == 5
    assert config.cache.eviction.check_interval == timedelta(minutes=10)
    assert config.cache.max_size_bytes == 1000
    assert config.database.path == "/data/models.db"


def test_bad_port_in_file_names_the_field_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: 70000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "server.port = 70000" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "cache:\n  eviction:\n    policy:\n      unused_threshold: soon\n",
            "cache.eviction.policy.unused_threshold = 'soon'",
        ),
        ("logging:\n  level: loud\n", "logging.level = 'loud'"),
        ("logging:\n  format: xml\n", "logging.format = 'xml'"),
        ("cache:\n  directroy: /x\n", "cache.directroy: unknown option"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("server: [unclosed\n", "not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_invalid_files_are_explained(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(path, environ={})
    assert needle in str(info.value)
    if "YAML" in needle:
        assert "\n" not in str(info.value)  # one line, without the parser's caret drawing


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("1h", 3600), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("3600", 3600), ("2w", 1209600)],
)
def test_durations_parse_and_format(text: str, seconds: int) -> None:
    value = parse_duration(text)
    assert value == timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "7x", "d7", "-1h", "1.5h", "one hour"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
