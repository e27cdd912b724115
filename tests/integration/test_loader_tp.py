"""The loader's contract with a small real torch model, TP=2 as two ranks, each rank its own process.

The engine is played by `tests/helpers/tp_model.py` (column/row-parallel shards, FP8 weights with
scale buffers, optional post-processing) so that the framework-free loader is tested on its own and
at TP=2 (the real vLLM is in `test_vllm_real.py`); transfers run over NIXL/UCX on host memory. The
first rank-set loads from disk and becomes the source; the second receives every tensor from it and
must compute bit-identical outputs.
"""

from __future__ import annotations

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
    tmp: Path, name: str, index: int, model_dir: Path, registry: Path, post: str = "none"
) -> Iterator[dict[str, Any]]:
    out, ready = tmp / f"{name}-{index}.pt", tmp / f"{name}-{index}.ready"
    log = tmp / f"{name}-{index}.log"
    args = [sys.executable, "-m", "tests.helpers.tp_rank_proc", "--rank", str(index), "--world", str(WORLD),
            "--model-dir", str(model_dir), "--registry", str(registry), "--out", str(out), "--ready-file", str(ready)]  # fmt: skip
    args += ["--post-process", post]
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


def test_post_processing_into_state_outside_the_module_is_redone_on_every_replica(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Like vLLM's CPU backend: post-processing moves a weight into a closure and empties the parameter.
    The loaded state travels and the target packs it itself, so it computes exactly what the source does."""
    registry = tmp_path / "sources.db"
    with rank(tmp_path, "source", 0, checkpoint, registry, post="pack") as source:
        assert source["mode"] == "disk" and source["endpoint"]
        with rank(tmp_path, "target", 0, tmp_path / "nowhere", registry, post="pack") as target:
            assert target["mode"] == "p2p", target["reason"]
            assert torch.equal(target["output"], source["output"])
            assert target["state"]["layers.0.up.weight"].numel() > 0  # what travelled is the loaded weight


def test_a_replica_whose_post_processing_rewrites_loaded_tensors_is_never_a_source(
    checkpoint: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "sources.db"
    with rank(tmp_path, "rewriter", 0, checkpoint, registry, post="inplace") as rewriter:
        assert rewriter["mode"] == "disk"
        assert rewriter["endpoint"] == ""  # not published: its memory no longer holds the loaded state
        with rank(tmp_path, "next", 0, checkpoint, registry, post="inplace") as following:
            assert following["mode"] == "disk" and following["reason"] == "no Ready source of this layout"
            assert torch.equal(following["output"], rewriter["output"])
