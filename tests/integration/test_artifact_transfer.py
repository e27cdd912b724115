"""Compiled artifacts over a real WorkerService (gRPC): what arrives is identical or nothing arrives.

A source serves a tree of files; a target fetches them into its own cache root. Every refusal (another
key, a corrupt file, an unsafe path, a set too large, nothing served yet) leaves the target's caches
exactly as they were: no staging directory, no partial file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc
from modelexpress.artifacts import ArtifactManifest, ArtifactStore, collect, fetch_artifacts
from modelexpress.p2p.service import WorkerInfo, WorkerServer

KEY = {"model": "org/m", "dtype": "bfloat16", "vllm_config_hash": "abc123", "torch": "2.13.0"}
TREE = "torch_compile_cache/torch_aot_compile/h1"
MAX_BYTES, MAX_FILES = 1 << 30, 1000


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "source" / "vllm"
    tree = root / TREE
    (tree / "rank_0_0").mkdir(parents=True)
    (tree / "rank_0_0" / "model").write_bytes(b"aot-compiled function")
    (tree / "inductor_cache" / "ab").mkdir(parents=True)
    (tree / "inductor_cache" / "ab" / "kernel.so").write_bytes(os.urandom(3 << 20))  # several windows and chunks
    (tree / "inductor_cache" / "ab" / "kernel.cpp").write_bytes(b"void kernel() {}\n")
    (tree / "inductor_cache" / "empty").write_bytes(b"")
    return root


@pytest.fixture
def server() -> Iterator[WorkerServer]:
    worker = WorkerServer(WorkerInfo(agent_name="source"), "127.0.0.1", 0)
    worker.start()
    yield worker
    worker.stop(grace=0)


def _serve(server: WorkerServer, root: Path, key: dict[str, str] = KEY) -> ArtifactManifest:
    manifest = collect(key, [("vllm", root, TREE)])
    server.publish_artifacts(ArtifactStore(manifest, {"vllm": root}))
    return manifest


def _endpoint(server: WorkerServer) -> str:
    return f"127.0.0.1:{server.port}"


def test_a_target_receives_every_file_identical_and_then_finds_them_present(
    server: WorkerServer, source_root: Path, tmp_path: Path
) -> None:
    manifest = _serve(server, source_root)
    target = tmp_path / "target" / "vllm"
    result = fetch_artifacts([_endpoint(server)], KEY, {"vllm": target}, MAX_BYTES, MAX_FILES, window=1 << 20)
    assert result.outcome == "received", result.reason
    assert result.files == 4 and result.bytes == manifest.total_bytes
    assert _files(target) == _files(source_root)
    assert not [p for p in target.rglob(".mx-incoming-*")]
    again = fetch_artifacts([_endpoint(server)], KEY, {"vllm": target}, MAX_BYTES, MAX_FILES)
    assert again.outcome == "present" and again.bytes == 0


def test_small_windows_resume_reads_and_still_give_identical_files(
    server: WorkerServer, source_root: Path, tmp_path: Path
) -> None:
    _serve(server, source_root)
    target = tmp_path / "target"
    result = fetch_artifacts([_endpoint(server)], KEY, {"vllm": target}, MAX_BYTES, MAX_FILES, window=100_003)
    assert result.outcome == "received", result.reason
    assert _files(target) == _files(source_root)


def test_a_file_corrupted_after_listing_is_refused_and_nothing_is_placed(
    server: WorkerServer, source_root: Path, tmp_path: Path
) -> None:
    _serve(server, source_root)
    kernel = source_root / TREE / "inductor_cache" / "ab" / "kernel.so"
    data = bytearray(kernel.read_bytes())
    data[12345] ^= 0x01  # one bit, same size
    kernel.write_bytes(bytes(data))
    target = tmp_path / "target"
    target.mkdir()
    result = fetch_artifacts([_endpoint(server)], KEY, {"vllm": target}, MAX_BYTES, MAX_FILES)
    assert result.outcome == "refused"
    assert "kernel.so: SHA-256 differs from the manifest" in result.reason
    assert _files(target) == {} and list(target.iterdir()) == []


def test_another_key_is_refused_before_any_byte_moves(server: WorkerServer, source_root: Path, tmp_path: Path) -> None:
    _serve(server, source_root, {**KEY, "dtype": "float16"})
    target = tmp_path / "target"
    result = fetch_artifacts([_endpoint(server)], KEY, {"vllm": target}, MAX_BYTES, MAX_FILES)
    assert result.outcome == "refused"
    assert "compiled under another key (dtype: 'bfloat16' here, 'float16' there)" in result.reason
    assert not target.exists()


def test_a_set_larger_than_the_bound_is_refused(server: WorkerServer, source_root: Path, tmp_path: Path) -> None:
    _serve(server, source_root)
    result = fetch_artifacts([_endpoint(server)], KEY, {"vllm": tmp_path / "t"}, 1 << 20, MAX_FILES)
    assert result.outcome == "refused" and "MX_ARTIFACT_MAX_BYTES=1048576" in result.reason
    assert not (tmp_path / "t").exists()


class _Forged:
    """A malicious source's manifest: a path that climbs out of the cache."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def manifest(self) -> _Forged:
        return self

    def to_proto(self) -> worker_pb2.ArtifactManifest:
        return worker_pb2.ArtifactManifest(
            key=KEY, files=[worker_pb2.ArtifactFile(root="vllm", path=self.path, size=4, sha256="0" * 64)]
        )


@pytest.mark.parametrize("path", ["../../outside/.bashrc", "/etc/cron.d/job", "link/escaped"])
def test_a_manifest_path_that_escapes_the_cache_is_refused(server: WorkerServer, tmp_path: Path, path: str) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", target / "link")
    server.artifacts = _Forged(path)  # type: ignore[assignment]
    result = fetch_artifacts([_endpoint(server)], KEY, {"vllm": target}, MAX_BYTES, MAX_FILES)
    assert result.outcome == "refused", result
    assert not (tmp_path / "outside").exists() and list((tmp_path / "elsewhere").iterdir()) == []


def test_a_source_still_compiling_says_so_and_the_next_source_serves(
    server: WorkerServer, source_root: Path, tmp_path: Path
) -> None:
    compiling = WorkerServer(WorkerInfo(agent_name="compiling"), "127.0.0.1", 0)
    compiling.artifacts_pending = "vLLM is still compiling"
    compiling.start()
    try:
        alone = fetch_artifacts([_endpoint(compiling)], KEY, {"vllm": tmp_path / "t"}, MAX_BYTES, MAX_FILES)
        assert alone.outcome == "none" and "vLLM is still compiling" in alone.reason
        _serve(server, source_root)
        both = fetch_artifacts([_endpoint(compiling), _endpoint(server)], KEY, {"vllm": tmp_path / "t"}, MAX_BYTES,
                               MAX_FILES)  # fmt: skip
        assert both.outcome == "received" and both.source == _endpoint(server)
    finally:
        compiling.stop(grace=0)


def test_only_listed_files_can_be_read(server: WorkerServer, source_root: Path) -> None:
    _serve(server, source_root)
    (source_root / "secret").write_bytes(b"not an artifact")
    with grpc.insecure_channel(_endpoint(server)) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ReadArtifact(worker_pb2.ReadArtifactRequest(root="vllm", path="secret"), timeout=5))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.ReadArtifact(worker_pb2.ReadArtifactRequest(root="vllm", path=f"{TREE}/../../secret"), timeout=5))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
