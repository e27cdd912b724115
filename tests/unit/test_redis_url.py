"""Redis URLs never leak their password into messages; REDIS_URL reaches the worker settings."""

from __future__ import annotations

import pytest

from modelexpress.config.worker import WorkerSettings
from modelexpress.registry.redis import redacted_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379", "redis://localhost:6379"),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://user:hunter2@redis.example.com/1", "rediss://user:***@redis.example.com/1"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    assert "hunter2" not in redacted_url(url)


def test_redis_url_from_the_seeds_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("MX_METADATA_BACKEND", "redis")
    settings = WorkerSettings()
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.metadata_backend == "redis"
    monkeypatch.setenv("MX_REDIS_URL", "redis://other:6379")
    assert WorkerSettings().redis_url == "redis://other:6379"
