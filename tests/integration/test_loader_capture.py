"""The capture rule in-process, with real NIXL: a failed pull leaves the engine's module exactly as it
was built (nothing for a disk load to reuse), and loaded state that cannot be captured is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modelexpress.config.worker import WorkerSettings
from modelexpress.loader import WeightLoader, capture_gate
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry import EmbeddedRegistry
from tests.harness.processes import free_port

IDENTITY = WorkerIdentity(model_name="test/rotary", dtype="float32")


class WithTable(nn.Module):
    """A linear layer and a table computed at construction, like vLLM's shared rotary cos/sin cache."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.register_buffer("table", torch.arange(64, dtype=torch.float32).reshape(4, 16), persistent=False)


def test_a_failed_pull_leaves_the_module_exactly_as_built(tmp_path: Path) -> None:
    registry = EmbeddedRegistry(tmp_path / "sources.db", ttl_seconds=600)
    dead = f"127.0.0.1:{free_port()}"  # a killed replica's record: Ready, but nothing listens
    registry.publish(SourceRecord(worker_id="gone", identity=IDENTITY, endpoint=dead, agent_name="gone", state="Ready"))
    module = WithTable()
    before = {name: (t, t.data_ptr(), t.clone()) for name, t in [*module.named_parameters(), *module.named_buffers()]}
    settings = WorkerSettings(worker_host="127.0.0.1", connect_timeout_secs=2)
    loader = WeightLoader(IDENTITY, settings, registry)
    assert loader.sources() == [dead]
    assert loader.receive(module) is None
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        same, ptr, values = before[name]
        assert t is same and t.data_ptr() == ptr and torch.equal(t, values), name
    report = loader.adopt(module)  # the disk load then goes into the untouched module
    assert report.mode == "disk" and report.reason == "every source failed"
    assert torch.equal(module.table, before["table"][2])
    loader.close()
    registry.close()


def test_loaded_state_that_cannot_be_captured_is_named() -> None:
    assert capture_gate(WithTable()) is None
    with torch.device("meta"):
        lazy = WithTable()  # online quantization builds its weights while reading the checkpoint
    reason = capture_gate(lazy)
    assert reason is not None and "proj.weight" in reason and "meta tensors" in reason
    from torch.testing._internal.two_tensor import TwoTensor

    wrapped = WithTable()
    wrapped.proj.weight = nn.Parameter(TwoTensor(torch.zeros(16, 16), torch.zeros(16, 16)), requires_grad=False)
    reason = capture_gate(wrapped)
    assert reason is not None and "proj.weight keep their bytes in inner tensors (TwoTensor)" in reason


def test_a_gated_replica_loads_from_disk_and_is_never_published(tmp_path: Path) -> None:
    registry = EmbeddedRegistry(tmp_path / "sources.db", ttl_seconds=600)
    with torch.device("meta"):
        lazy = WithTable()
    loader = WeightLoader(IDENTITY, WorkerSettings(worker_host="127.0.0.1"), registry)

    def materialise(module: nn.Module) -> None:
        module.to_empty(device="cpu")

    report = loader.load(lazy, materialise)
    assert report.mode == "disk" and "meta tensors" in report.reason
    assert loader.source is None and registry.find_ready(IDENTITY) == []
    registry.close()


@pytest.mark.parametrize("algorithm", ["xxh3-64", "row-sum-64"])
def test_seal_finds_a_loaded_tensor_rewritten_in_place(tmp_path: Path, algorithm: str) -> None:
    loader = WeightLoader(IDENTITY, WorkerSettings(worker_host="127.0.0.1", checksum_algorithm=algorithm), None)
    module = WithTable()
    loader.adopt(module)
    module.proj.weight = nn.Parameter(module.proj.weight * 2, requires_grad=False)  # replaced: the pool keeps it
    assert loader.seal() and loader.gate is None
    module.table.add_(1)  # rewritten where it lies
    assert not loader.seal()
    assert loader.gate is not None and "rewrote 1 loaded tensor(s) in place (e.g. table)" in loader.gate
    assert loader.publish() is None


def test_links_made_while_the_model_is_built_serve_the_pull(tmp_path: Path) -> None:
    """`prepare()` before the module exists (as the vLLM adapter does while vLLM builds the model): the
    NIXL agent, the registry lookup and the link to the source are made in the background; `receive`
    then only matches and READs, and a dead record among the sources is reported once, then skipped."""
    registry = EmbeddedRegistry(tmp_path / "sources.db", ttl_seconds=600)
    settings = WorkerSettings(worker_host="127.0.0.1", connect_timeout_secs=2)
    source_module = WithTable()
    with torch.no_grad():
        source_module.proj.weight.normal_()
    a = WeightLoader(IDENTITY, settings, registry)
    a.publish(a.adopt(source_module))
    dead = f"127.0.0.1:{free_port()}"
    registry.publish(SourceRecord(worker_id="gone", identity=IDENTITY, endpoint=dead, agent_name="gone", state="Ready"))
    b = WeightLoader(IDENTITY, settings, registry)
    b.prepare()
    assert b._ahead is not None
    prepared = b._ahead.result(timeout=30)  # done before the module is even built
    assert prepared is not None and b.engine is not None
    assert set(prepared.links) | set(prepared.failures) == {a.source.endpoint, dead}  # type: ignore[union-attr]
    assert dead in prepared.failures and a.source.endpoint in prepared.links  # type: ignore[union-attr]
    target = WithTable()
    report = b.receive(target)
    assert report is not None and report.mode == "p2p" and report.sources == [a.source.endpoint]  # type: ignore[union-attr]
    assert torch.equal(target.proj.weight, source_module.proj.weight) and prepared.links == {}
    assert b.publish(report) is not None  # serves with the agent made in the background
    for loader in (b, a):
        loader.close()
    registry.close()
