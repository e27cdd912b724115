"""A real redis-server on 127.0.0.1 for the Redis registry tests (from `make setup`: .cache/redis)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.harness.processes import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[2]


def redis_binary() -> str:
    """`$REDIS_SERVER`, else the one `make setup` unpacked, else redis-server on PATH."""
    for candidate in (os.environ.get("REDIS_SERVER"), str(ROOT / ".cache" / "redis" / "redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: run `make setup` (hack/fetch-redis.sh) or set REDIS_SERVER")
    return found


@dataclass
class RedisServer:
    proc: subprocess.Popen[bytes]
    port: int
    password: str | None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_redis(workdir: Path, password: str | None = None) -> RedisServer:
    """redis-server without persistence on a free port; retried if another process takes the port first."""
    binary = redis_binary()
    for _ in range(5):
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(workdir)]
        if password:
            args += ["--requirepass", password]
        log = (workdir / f"redis-{port}.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)  # noqa: PLW1509
        server = RedisServer(proc, port, password)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                server.client().ping()
                return server
            except redis.ConnectionError:
                time.sleep(0.05)
        server.stop()
    raise RuntimeError(f"redis-server did not start; see the logs in {workdir}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.stop()
