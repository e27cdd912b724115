"""The loader's contract with a small real torch model, TP=2 as two ranks, each rank its own process.

vLLM and CUDA cannot be installed on this CPU machine, so the engine is played by
`tests/helpers/tp_model.py` (column/row-parallel shards, FP8 weights with scale buffers) and the
transfers run over NIXL/UCX on host memory. The first rank-set loads from disk and becomes the
source; the second receives every tensor from it and must compute bit-identical outputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.harness.processes import die_with_parent
from tests.helpers.sources import ROOT
from tests.helpers.tp_model import write_checkpoint

WORLD = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("checkpoint")
    write_checkpoint(directory)
    return directory


@contextmanager
def rank(
    tmp: Path, name: str, index: int, model_dir: Path, registry: Path, config: Any = None
) -> Iterator[dict[str, Any]]:
    out, ready = tmp / f"{name}-{index}.pt", tmp / f"{name}-{index}.ready"
    log = tmp / f"{name}-{index}.log"
    args = [sys.executable, "-m", "tests.helpers.tp_rank_proc", "--rank", str(index), "--world", str(WORLD),
            "--model-dir", str(model_dir), "--registry", str(registry), "--out", str(out), "--ready-file", str(ready)]  # fmt: skip
    if config is not None:
        args += ["--model-config", json.dumps(config)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=die_with_parent,  # noqa: PLW1509
                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        result = torch.load(out, weights_only=False)
        result["endpoint"] = ready.read_text()
        yield result
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_second_rank_set_receives_every_tensor_and_computes_identically(checkpoint: Path, tmp_path: Path) -> None:
    registry = tmp_path / "sources.db"
    with ExitStack() as stack:
        first = [stack.enter_context(rank(tmp_path, "first", r, checkpoint, registry)) for r in range(WORLD)]
        assert [f["mode"] for f in first] == ["disk", "disk"]
        # The second set is given no checkpoint at all: it can only have its weights from the peers.
        second = [
            stack.enter_context(rank(tmp_path, "second", r, tmp_path / "nowhere", registry)) for r in range(WORLD)
        ]
        for r in range(WORLD):
            assert second[r]["mode"] == "p2p", second[r]["reason"]
            assert second[r]["sources"] == [first[r]["endpoint"]]  # rank r pulls from rank r only
            assert second[r]["state"].keys() == first[r]["state"].keys()
            for name, tensor in first[r]["state"].items():
                got = second[r]["state"][name]
                assert got.dtype == tensor.dtype and torch.equal(got.view(torch.uint8), tensor.view(torch.uint8)), name
            assert torch.equal(second[r]["output"], first[r]["output"])  # bit-identical, FP8 scales included
        assert first[0]["state"]["layers.0.gate"].dtype == torch.float8_e4m3fn
        assert not torch.equal(first[0]["output"], first[1]["output"])  # the ranks really hold different shards
        assert second[0]["bytes"] == sum(t.numel() * t.element_size() for t in first[0]["state"].values())


def test_mla_models_load_from_disk_unless_the_gate_is_skipped(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "sources.db"
    mla = {"architectures": ["DeepseekV3ForCausalLM"], "kv_lora_rank": 512}
    with rank(tmp_path, "source", 0, checkpoint, registry) as source:
        assert source["mode"] == "disk"
        with rank(tmp_path, "gated", 0, checkpoint, registry, config=mla) as gated:
            assert gated["mode"] == "disk" and "multi-head latent attention" in gated["reason"]
            assert gated["endpoint"] == ""  # a gated worker is not published as a source either
        monkeypatch.setenv("MX_SKIP_FEATURE_CHECK", "1")
        with rank(tmp_path, "forced", 0, tmp_path / "nowhere", registry, config=mla) as forced:
            assert forced["mode"] == "p2p" and torch.equal(forced["output"], source["output"])
