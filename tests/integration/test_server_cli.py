"""The ModelExpress server and its CLI, for real: `modelexpress server` as a process, the client verbs as
processes, downloads from a local HTTP server speaking the Hugging Face Hub API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc
from tests.harness.processes import die_with_parent, free_port
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


def start_server(tmp_path: Path, hub: FakeHub, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """A `modelexpress server` process on a free port over the cache and database under tmp_path/server."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelexpress.cli.main", "server", "--host", "127.0.0.1", "--port", "0"],
        env={**_env(tmp_path, hub, "server"), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=ROOT, preexec_fn=die_with_parent,  # noqa: PLW1509
    )  # fmt: skip
    assert proc.stdout is not None
    endpoint = None
    deadline = time.monotonic() + 60
    while endpoint is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            endpoint = line.rsplit(" ", 1)[1].strip()
    assert endpoint, "the server did not start"
    return proc, endpoint


@pytest.fixture
def server(tmp_path: Path, hub: FakeHub) -> Iterator[str]:
    proc, endpoint = start_server(tmp_path, hub)
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
    assert "error:" not in fallback.stderr  # the unreachable server did not stop the command
    assert (tmp_path / "client" / "cache" / "models--org--tiny").is_dir()
    missing = cli(tmp_path, hub, dead, "model", "download", "org/absent", "--strategy", "direct")
    assert missing.returncode == 3 and "check the model name" in missing.stderr


def _json(run: subprocess.CompletedProcess[str]) -> object:
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_status_stats_validate_and_clear_all(tmp_path: Path, hub: FakeHub, server: str) -> None:
    absent = _json(cli(tmp_path, hub, server, "--format", "json", "model", "status", "org/tiny"))
    assert absent == {"model": "hf://org/tiny", "state": "not-cached", "revisions": [], "downloads": []}
    assert cli(tmp_path, hub, server, "model", "download", "org/tiny", "--strategy", "server").returncode == 0
    status = _json(cli(tmp_path, hub, server, "--format", "json-pretty", "model", "status", "hf://org/tiny"))
    assert isinstance(status, dict) and status["state"] == "cached"
    assert status["revisions"][0]["resolvedRevision"] == hub.state.repos["org/tiny"].commit
    human = cli(tmp_path, hub, server, "model", "status", "hf://org/tiny")
    assert human.stdout.startswith("hf://org/tiny: cached") and f"{sum(map(len, FILES.values()))} bytes" in human.stdout
    idle = cli(tmp_path, hub, server, "model", "status")
    assert idle.returncode == 0 and "no downloads in flight" in idle.stdout

    stats = _json(cli(tmp_path, hub, server, "--format", "json", "model", "stats"))
    assert isinstance(stats, dict)
    assert stats["models"] == 1 and stats["totalBytes"] == sum(map(len, FILES.values()))
    assert stats["downloadsStarted"] == 1 and stats["freeBytes"] > 0
    assert "1 model(s)" in cli(tmp_path, hub, server, "model", "stats").stdout

    assert _json(cli(tmp_path, hub, server, "--format", "json", "model", "validate")) == [
        {"model": "hf://org/tiny", "revision": "main", "ok": True, "problems": []}
    ]
    # Damage the server's copy behind its back: validate names the file and fails.
    weights = tmp_path / "server" / "cache" / "models--org--tiny" / "snapshots"
    blob = next(weights.rglob("model.safetensors")).resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    broken = cli(tmp_path, hub, server, "model", "validate", "org/tiny")
    assert broken.returncode == 1 and "model.safetensors does not match its sha256" in broken.stdout
    not_cached = cli(tmp_path, hub, server, "model", "validate", "org/other")
    assert not_cached.returncode == 1 and "hf://org/other is not cached" in not_cached.stderr

    refused = cli(tmp_path, hub, server, "model", "clear-all")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _json(cli(tmp_path, hub, server, "--format", "json", "model", "list")) != []
    cleared = _json(cli(tmp_path, hub, server, "--format", "json", "model", "clear-all", "--yes"))
    assert cleared == [{"model": "hf://org/tiny", "deleted": True, "message": "removed 1 revision(s) of hf://org/tiny"}]
    assert _json(cli(tmp_path, hub, server, "--format", "json", "model", "list")) == []
    assert not (tmp_path / "server" / "cache" / "models--org--tiny").exists()


def test_a_local_model_is_forgotten_never_deleted(tmp_path: Path, hub: FakeHub, server: str) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text("{}")
    recorded = subprocess.run(
        [sys.executable, "-m", "modelexpress.cli.main", "cache", "pull", str(local)],
        env=_env(tmp_path, hub, "server"), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    assert [m["model"] for m in _json(cli(tmp_path, hub, server, "--format", "json", "model", "list"))] == [str(local)]

    cleared = cli(tmp_path, hub, server, "model", "clear", str(local))
    assert cleared.returncode == 0, cleared.stderr
    assert f"forgot {local}" in cleared.stdout and "stays" in cleared.stdout
    assert (local / "config.json").read_text() == "{}"
    assert _json(cli(tmp_path, hub, server, "--format", "json", "model", "list")) == []

    assert subprocess.run(
        [sys.executable, "-m", "modelexpress.cli.main", "cache", "pull", str(local)],
        env=_env(tmp_path, hub, "server"), capture_output=True, text=True, timeout=120, check=False,
    ).returncode == 0  # fmt: skip
    assert cli(tmp_path, hub, server, "model", "download", "org/tiny", "--strategy", "server").returncode == 0
    everything = _json(cli(tmp_path, hub, server, "--format", "json", "model", "clear-all", "--yes"))
    assert isinstance(everything, list) and {r["model"]: r["deleted"] for r in everything} == {
        str(local): True,
        "hf://org/tiny": True,
    }
    assert (local / "config.json").is_file()
    assert _json(cli(tmp_path, hub, server, "--format", "json", "model", "list")) == []


def _client_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_no_shared_storage_streams_into_the_clients_own_cache(tmp_path: Path, hub: FakeHub, server: str) -> None:
    commit = hub.state.repos["org/tiny"].commit
    for chunk in (4096, 32 << 10, 1 << 20):
        cache = tmp_path / f"client-cache-{chunk}"
        run = cli(
            tmp_path, hub, server, "--format", "json", "--no-shared-storage", "--transfer-chunk-size", str(chunk),
            "--cache-path", str(cache), "model", "download", "org/tiny", "--strategy", "server",
        )  # fmt: skip
        result = _json(run)
        assert isinstance(result, dict) and result["via"] == "server-stream" and result["chunkSize"] == chunk
        snapshot = cache / "models--org--tiny" / "snapshots" / commit
        assert Path(result["path"]) == snapshot
        assert _client_files(snapshot) == FILES
        assert (cache / "models--org--tiny" / "refs" / "main").read_text() == commit
        assert not list(cache.rglob("*.incomplete"))
    # The client recorded it in its own database: `cache ls` on this machine shows it.
    local = _json(cli(tmp_path, hub, server, "cache", "ls", "--format", "json"))
    assert isinstance(local, list)
    assert [(m["provider"], m["name"], m["path"]) for m in local] == [("hf", "org/tiny", str(snapshot))]
    # The environment variables of the seeds do the same as the flags.
    env_cache = tmp_path / "env-cache"
    run = subprocess.run(
        [sys.executable, "-m", "modelexpress.cli.main", "model", "download", "org/tiny", "--strategy", "server"],
        env={**_env(tmp_path, hub, "client"), "MODEL_EXPRESS_URL": f"http://{server}",
             "MODEL_EXPRESS_NO_SHARED_STORAGE": "true", "MODEL_EXPRESS_TRANSFER_CHUNK_SIZE": "65536",
             "MODEL_EXPRESS_CACHE_DIRECTORY": str(env_cache)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert _client_files(env_cache / "models--org--tiny" / "snapshots" / commit) == FILES
    bad = cli(tmp_path, hub, server, "--transfer-chunk-size", "0", "model", "download", "org/tiny")
    assert bad.returncode != 0 and "--transfer-chunk-size" in bad.stderr


def test_a_cut_stream_leaves_nothing_that_looks_complete_and_a_retry_completes_it(tmp_path: Path, hub: FakeHub) -> None:
    from modelexpress.client.receive import StreamError, receive_model

    big = {"a.json": b'{"a": 1}', "big.safetensors": os.urandom(48 << 20), "z.json": b'{"z": 2}'}
    hub.add("org/big", big)
    proc, endpoint = start_server(tmp_path, hub)
    try:
        assert cli(tmp_path, hub, endpoint, "model", "download", "org/big", "--strategy", "server").returncode == 0
        cache = tmp_path / "receiver"
        with grpc.insecure_channel(endpoint) as channel, pytest.raises(StreamError, match="broke"):
            # The server dies after the first chunk of the big file is written: a real cut, mid-file.
            receive_model(channel, "org/big", "main", cache, 4096, 10, retries=0,
                          progress=lambda done, _total: done > 100 and proc.kill())  # fmt: skip
        proc.wait(10)
        snapshot = next((cache / "models--org--big" / "snapshots").iterdir())
        assert _client_files(snapshot) == {"a.json": big["a.json"]}  # only the file that completed
        assert not list(cache.rglob("*.incomplete"))
        proc, endpoint = start_server(tmp_path, hub)
        with grpc.insecure_channel(endpoint) as channel:
            got = receive_model(channel, "org/big", "main", cache, 1 << 20, 10)
        assert _client_files(snapshot) == big
        assert got.received_bytes == len(big["big.safetensors"]) + len(big["z.json"])  # a.json was not fetched again
        with grpc.insecure_channel(endpoint) as channel:
            stub = server_pb2_grpc.ModelServiceStub(channel)
            for paths, code in ((["../../etc/passwd"], grpc.StatusCode.INVALID_ARGUMENT),
                                (["/etc/passwd"], grpc.StatusCode.INVALID_ARGUMENT),
                                (["missing.bin"], grpc.StatusCode.NOT_FOUND)):  # fmt: skip
                with pytest.raises(grpc.RpcError) as refused:
                    list(
                        stub.StreamModelFiles(
                            server_pb2.ModelFilesRequest(model_name="org/big", paths=paths), timeout=10
                        )
                    )
                assert refused.value.code() == code, paths
    finally:
        proc.kill()
        proc.wait(10)


def test_the_server_exports_its_downloads_and_streams_at_metrics(tmp_path: Path, hub: FakeHub) -> None:
    metrics_port = free_port()
    proc, endpoint = start_server(tmp_path, hub, {"MODEL_EXPRESS_SERVER_METRICS_PORT": str(metrics_port)})
    try:
        assert cli(tmp_path, hub, endpoint, "model", "download", "org/tiny", "--strategy", "server").returncode == 0
        assert cli(tmp_path, hub, endpoint, "model", "download", "org/absent", "--strategy", "server").returncode != 0
        with grpc.insecure_channel(endpoint) as channel:
            chunks = list(
                server_pb2_grpc.ModelServiceStub(channel).StreamModelFiles(
                    server_pb2.ModelFilesRequest(model_name="hf://org/tiny"), timeout=30
                )
            )
        assert sum(len(c.data) for c in chunks) == sum(map(len, FILES.values()))
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
            samples = {
                s.name: s.value for f in text_string_to_metric_families(reply.read().decode()) for s in f.samples
            }
    finally:
        proc.terminate()
        proc.wait(30)
    assert samples["modelexpress_server_downloads_started_total"] == 2
    assert samples["modelexpress_server_download_failures_total"] == 1
    assert samples["modelexpress_server_streamed_bytes_total"] == sum(map(len, FILES.values()))
    assert samples["modelexpress_server_downloads_in_flight"] == 0 and samples["modelexpress_server_streams"] == 0
    assert samples["modelexpress_server_refused_calls_total"] == 0


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path, hub: FakeHub) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "modelexpress.cli.main", "server", "--host", "127.0.0.1", "--port", "0"],
            env={**_env(tmp_path, hub, "server"), "MODEL_EXPRESS_SERVER_METRICS_PORT": str(port)},
            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().startswith("error: cannot serve metrics on 127.0.0.1:") and run.stderr.count("\n") == 1
