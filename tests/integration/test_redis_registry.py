"""The Redis source registry against a real redis-server: workers find each other, dead ones expire.

The workers are the real CLI (`modelexpress worker serve` / `worker pull --serve-after`) in their own
processes with `MX_METADATA_BACKEND=redis`; transfers are real NIXL READs over UCX on host memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hack.make_tiny_model import tiny_model, write
from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry import RegistryUnavailableError, open_registry
from modelexpress.registry.redis import RedisRegistry
from tests.harness.processes import die_with_parent
from tests.harness.redis import RedisServer, start_redis
from tests.helpers.sources import ROOT

TTL = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    write(out, tiny_model(layers=4, hidden=256), files=2)
    return out


def _env(server: RedisServer) -> dict[str, str]:
    return {
        **os.environ,
        "MX_METADATA_BACKEND": "redis",
        "REDIS_URL": server.url,
        "MX_STATUS_TTL_SECS": str(TTL),
        "MX_WORKER_HOST": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }


@contextmanager
def _worker(tmp: Path, server: RedisServer, *args: str) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    ready = tmp / f"ready-{time.monotonic_ns()}"
    log = ready.with_suffix(".log")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelexpress", "worker", *args, "--ready-file", str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(server),
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        yield proc, ready.read_text(), log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def _registry(server: RedisServer) -> RedisRegistry:
    registry = open_registry(WorkerSettings(metadata_backend="redis", redis_url=server.url, status_ttl_secs=TTL))
    assert isinstance(registry, RedisRegistry)
    return registry


def test_two_workers_find_each_other_and_a_killed_one_expires(
    model_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    identity = WorkerIdentity(model_name="org/tiny")
    registry = _registry(redis_server)
    with _worker(tmp_path, redis_server, "serve", str(model_dir), "--model-name", "org/tiny") as (first, first_ep, _):
        assert [r.endpoint for r in registry.find_ready(identity)] == [first_ep]
        with _worker(
            tmp_path, redis_server, "pull", "--model-name", "org/tiny", "--model-dir", str(model_dir), "--serve-after"
        ) as (_, second_ep, log):
            assert "from 1 source(s); all checksums verified" in log.read_text()
            assert {r.endpoint for r in registry.find_ready(identity)} == {first_ep, second_ep}
            assert registry.find_ready(WorkerIdentity(model_name="org/tiny", rank=1)) == []

            first.send_signal(signal.SIGKILL)  # no goodbye: only the TTL can remove it
            first.wait(10)
            time.sleep(TTL / 2)
            assert first_ep in {r.endpoint for r in registry.list_sources()}, "expired before its TTL"
            time.sleep(TTL / 2 + 1)
            # The killed worker is gone; the live one, refreshed every TTL/3, outlived its own first TTL.
            assert [r.endpoint for r in registry.find_ready(identity)] == [second_ep]
            assert [r.endpoint for r in registry.list_sources()] == [second_ep]
            keys = redis_server.client().keys("mx:v1:source:*")
            assert len(keys) == 1
        # A clean stop removes the record at once, without waiting for the TTL.
        assert registry.list_sources() == []
    registry.close()


def test_records_expire_and_indexes_are_tidied(redis_server: RedisServer) -> None:
    registry = RedisRegistry(redis_server.url, ttl_seconds=1)
    identity = WorkerIdentity(model_name="org/a")
    registry.publish(
        SourceRecord(worker_id="w1", identity=identity, endpoint="127.0.0.1:1", agent_name="a", state="Ready")
    )
    registry.publish(SourceRecord(worker_id="w2", identity=identity, endpoint="127.0.0.1:2", agent_name="b"))
    assert [r.worker_id for r in registry.find_ready(identity)] == ["w1"]
    registry.set_state("w2", "Ready")
    assert {r.worker_id for r in registry.find_ready(identity)} == {"w1", "w2"}
    registry.remove("w1")
    assert [r.worker_id for r in registry.list_sources()] == ["w2"]
    time.sleep(1.3)
    assert registry.find_ready(identity) == []
    assert registry.list_sources() == []
    assert redis_server.client().keys("mx:v1:*") == []
    with pytest.raises(KeyError, match="not registered"):
        registry.set_state("w2", "Ready")
    registry.close()


def test_unreachable_or_refusing_redis_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    server = start_redis(tmp_path, password="s3cret-pass")
    try:
        wrong = RedisRegistry(f"redis://:wrong-pass@127.0.0.1:{server.port}/0", timeout=2)
        with pytest.raises(RegistryUnavailableError) as refused:
            wrong.list_sources()
        assert "wrong-pass" not in str(refused.value)
        assert "redis://:***@127.0.0.1" in str(refused.value)
        assert "REDIS_URL" in str(refused.value)
        assert _registry(server).list_sources() == []
    finally:
        server.stop()
    out = subprocess.run(
        [sys.executable, "-m", "modelexpress", "sources", "ls"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(server), "REDIS_URL": f"redis://:s3cret-pass@127.0.0.1:{server.port}/0"},
        check=False,
    )
    assert out.returncode == 1
    assert "cannot" in out.stderr or "Connection" in out.stderr, out.stderr
    assert "s3cret-pass" not in out.stderr + out.stdout
    assert "check REDIS_URL" in out.stderr
