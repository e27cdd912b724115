"""The ModelExpress server and its CLI, for real: `modelexpress server` as a process, the client verbs as
processes, downloads from a local HTTP server speaking the Hugging Face Hub API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc
from tests.harness.processes import die_with_parent
from tests.helpers.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": os.urandom((1 << 20) + 12345),
    "empty.txt": b"",
    "tokenizer/tokenizer.json": b'{"v": 1}',
}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add("org/tiny", FILES)
        yield server


def _env(tmp_path: Path, hub: FakeHub, name: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "MODEL_EXPRESS_CACHE_DIRECTORY": str(tmp_path / name / "cache"),
        "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / name / "models.db"),
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def server(tmp_path: Path, hub: FakeHub) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelexpress.cli.main", "server", "--host", "127.0.0.1", "--port", "0"],
        env=_env(tmp_path, hub, "server"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        preexec_fn=die_with_parent,  # noqa: PLW1509
    )  # fmt: skip
    assert proc.stdout is not None
    endpoint = None
    deadline = time.monotonic() + 60
    while endpoint is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            endpoint = line.rsplit(" ", 1)[1].strip()
    assert endpoint, "the server did not start"
    yield endpoint
    proc.terminate()
    assert proc.wait(30) == 0


def cli(tmp_path: Path, hub: FakeHub, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelexpress.cli.main", "--endpoint", endpoint, "--timeout", "10", *args],
        env=_env(tmp_path, hub, "client"), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_health_and_api(tmp_path: Path, hub: FakeHub, server: str) -> None:
    health = cli(tmp_path, hub, server, "--format", "json", "health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "ok"
    assert cli(tmp_path, hub, server, "health").stdout.startswith("ok: version ")
    pong = cli(tmp_path, hub, server, "--format", "json", "api", "send", "ping", "--payload", "{}")
    assert pong.returncode == 0 and json.loads(pong.stdout)["message"] == "pong"
    unknown = cli(tmp_path, hub, server, "api", "send", "launch-missiles")
    assert unknown.returncode == 1 and "unknown action" in unknown.stderr and "ping" in unknown.stderr
    bad = cli(tmp_path, hub, server, "api", "send", "ping", "--payload", "{not json")
    assert bad.returncode == 2 and "not JSON" in bad.stderr


def test_eight_clients_share_one_download_and_streams_are_exact(tmp_path: Path, hub: FakeHub, server: str) -> None:
    results: list[subprocess.CompletedProcess[str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(cli(tmp_path, hub, server, "--format", "json", "model", "download", "hf://org/tiny", "--strategy", "server")))
        for _ in range(8)
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    assert {json.loads(r.stdout)["via"] for r in results} == {"server"}
    file_gets = [r for r in hub.state.requests if r.startswith("GET /org/tiny/resolve/")]
    # each non-empty file fetched once, for all eight clients (an empty file needs no GET)
    assert sorted(file_gets) == sorted(set(file_gets)) and len(file_gets) == sum(1 for v in FILES.values() if v)
    listed = json.loads(cli(tmp_path, hub, server, "--format", "json", "model", "list").stdout)
    assert [m["model"] for m in listed] == ["hf://org/tiny"]
    files = json.loads(cli(tmp_path, hub, server, "--format", "json", "model", "files", "hf://org/tiny").stdout)
    assert {f["path"]: f["size"] for f in files} == {k: len(v) for k, v in FILES.items()}

    with grpc.insecure_channel(server) as channel:
        stub = server_pb2_grpc.ModelServiceStub(channel)
        for chunk_size in (1000, 32 << 10, 1 << 20):
            received: dict[str, bytearray] = {}
            chunks = list(
                stub.StreamModelFiles(
                    server_pb2.ModelFilesRequest(model_name="hf://org/tiny", chunk_size=chunk_size), timeout=30
                )
            )
            for chunk in chunks:
                data = received.setdefault(chunk.path, bytearray())
                assert chunk.offset == len(data) and chunk.total_size == len(FILES[chunk.path])
                data.extend(chunk.data)
            assert {k: bytes(v) for k, v in received.items()} == FILES
            assert chunks[-1].last_file and sum(c.last_chunk for c in chunks) == len(FILES)
            assert max(len(c.data) for c in chunks) <= chunk_size
        for name in ("../etc/passwd", "hf://org/../../x", "org/a\0b", "/models/abs"):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListModelFiles(server_pb2.ModelFilesRequest(model_name=name), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name

    cleared = cli(tmp_path, hub, server, "model", "clear", "hf://org/tiny")
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert cli(tmp_path, hub, server, "--format", "json", "model", "list").stdout.strip() == "[]"


def test_unreachable_server_fallback_downloads_directly_and_server_strategy_fails_fast(
    tmp_path: Path, hub: FakeHub
) -> None:
    dead = "127.0.0.1:9"  # nothing listens on the discard port
    started = time.monotonic()
    only_server = cli(tmp_path, hub, dead, "model", "download", "org/tiny", "--strategy", "server-only")
    assert only_server.returncode == 3 and "cannot be reached" in only_server.stderr
    assert time.monotonic() - started < 30
    fallback = cli(
        tmp_path, hub, dead, "--format", "json", "model", "download", "org/tiny", "--strategy", "smart-fallback"
    )
    assert fallback.returncode == 0, fallback.stderr
    assert "downloading directly" in fallback.stderr and json.loads(fallback.stdout)["via"] == "direct"
    assert (tmp_path / "client" / "cache" / "models--org--tiny").is_dir()
    missing = cli(tmp_path, hub, dead, "model", "download", "org/absent", "--strategy", "direct")
    assert missing.returncode == 3 and "check the model name" in missing.stderr
