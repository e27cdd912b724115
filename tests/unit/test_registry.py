"""The embedded source registry: identity and rank matching, Ready only, TTL, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.registry import EmbeddedRegistry, SourceRecord
from modelexpress.registry.ranking import Placement

ID0 = WorkerIdentity(model_name="org/m", tensor_parallel_size=2, rank=0)
ID1 = ID0.model_copy(update={"rank": 1})


def _record(worker: str, identity: WorkerIdentity, state: str = "Ready", node: str | None = None) -> SourceRecord:
    return SourceRecord(
        worker_id=worker, identity=identity, endpoint=f"{worker}:1", agent_name=worker, state=state, node=node
    )


def test_find_ready_matches_identity_rank_and_state(tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "r.db")
    reg.publish(_record("a", ID0))
    reg.publish(_record("b", ID1))
    reg.publish(_record("c", ID0, state="Initializing"))
    reg.publish(_record("d", ID0.model_copy(update={"revision": "other"})))
    assert [r.worker_id for r in reg.find_ready(ID0)] == ["a"]
    reg.set_state("c", "Ready")
    assert sorted(r.worker_id for r in reg.find_ready(ID0)) == ["a", "c"]
    reg.remove("a")
    assert [r.worker_id for r in reg.find_ready(ID0)] == ["c"]


def test_same_node_first(tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "r.db")
    reg.publish(_record("far", ID0, node="n2"))
    reg.publish(_record("near", ID0, node="n1"))
    reg.publish(_record("far2", ID0, node="n3"))
    assert reg.find_ready(ID0, Placement(node="n1"))[0].worker_id == "near"


def test_stale_records_are_never_handed_out(tmp_path: Path) -> None:
    reg = EmbeddedRegistry(tmp_path / "r.db", ttl_seconds=0.3)
    reg.publish(_record("a", ID0))
    assert reg.find_ready(ID0)
    time.sleep(0.5)
    assert reg.find_ready(ID0) == []


def _writer(path: str, start: int) -> None:
    reg = EmbeddedRegistry(path)
    for i in range(start, start + 50):
        reg.publish(_record(f"w{i}", ID0))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 50)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(EmbeddedRegistry(path).find_ready(ID0)) == 200


def _open_registry_at_once(path: str, barrier: Any) -> None:
    barrier.wait()
    EmbeddedRegistry(path).close()


def test_ranks_opening_a_new_embedded_registry_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    """The ranks of one vLLM instance open the file together; switching it to WAL is refused, not
    waited for, while another connection does it (seen with real vLLM at TP=2)."""
    context = mp.get_context("fork")
    for attempt in range(12):
        barrier = context.Barrier(4)
        path = str(tmp_path / f"sources-{attempt}.db")
        procs = [context.Process(target=_open_registry_at_once, args=(path, barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"attempt {attempt}"
