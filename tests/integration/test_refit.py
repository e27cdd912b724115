"""Weight versions over real NIXL (no engine): a trainer's publisher, replicas' receivers, in one process.

Whole first versions, deltas, replicas serving what they hold to other replicas, and the failures
that must leave a replica with exactly the version it had: a version nobody offers, bytes that do not
match their digests with no healthy source to repair them, a layout that does not fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelexpress.config.worker import WorkerSettings, load_worker_settings
from modelexpress.refit import LayoutMismatchError, UpdateError, VersionReceiver, WeightPublisher
from modelexpress.registry.embedded import EmbeddedRegistry

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def settings() -> WorkerSettings:
    return load_worker_settings(worker_host="127.0.0.1", connect_timeout_secs=5)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[EmbeddedRegistry]:
    found = EmbeddedRegistry(tmp_path / "registry.db", ttl_seconds=60)
    yield found
    found.close()


@pytest.fixture
def weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {f"model.layers.{i}.w": torch.randn(128, 256, generator=gen) for i in range(4)} | {
        "lm_head.weight": torch.randn(300, 256, generator=gen)
    }


@pytest.fixture
def trainer(settings: WorkerSettings, registry: EmbeddedRegistry) -> Iterator[WeightPublisher]:
    publisher = WeightPublisher("org/m", settings, registry)
    yield publisher
    publisher.close()


def _receiver(settings: WorkerSettings, registry: EmbeddedRegistry) -> Iterator[VersionReceiver]:
    receiver = VersionReceiver("org/m", settings, registry)
    yield receiver
    receiver.close()


replica = pytest.fixture(_receiver)
second_replica = pytest.fixture(_receiver)


@pytest.fixture
def holding_1(trainer: WeightPublisher, replica: VersionReceiver, weights: dict[str, torch.Tensor]) -> VersionReceiver:
    """The replica holding version 1, the weights as they are, taken from the trainer."""
    trainer.publish("1", weights.items())
    _take(replica, "1", _named(trainer))
    return replica


def _named(trainer: WeightPublisher) -> list[str]:
    """The sources an update from `trainer` names: its own endpoint."""
    return [trainer.endpoint or ""]


def _sources_ls(path: Path, *flags: str) -> str:
    """`modelexpress sources ls` against the test's registry."""
    env = {**os.environ, "MX_METADATA_BACKEND": "embedded", "MX_REGISTRY_PATH": str(path)}
    done = subprocess.run([sys.executable, "-m", "modelexpress", "sources", "ls", *flags], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _same(receiver: VersionReceiver, expected: dict[str, torch.Tensor]) -> bool:
    held = dict(receiver.held_tensors())
    return held.keys() == expected.keys() and all(torch.equal(held[n], t) for n, t in expected.items())


def _take(receiver: VersionReceiver, version: str, hints: list[str], timeout: float = 20) -> int:
    staged = receiver.fetch(version, hints, timeout)
    receiver.commit(staged)
    return staged.moved_bytes


def test_a_first_version_moves_whole_then_deltas_move_what_changed(
    trainer: WeightPublisher, replica: VersionReceiver, weights: dict[str, torch.Tensor]
) -> None:
    trainer.publish("1", weights.items())
    total = sum(t.nbytes for t in weights.values())
    assert _take(replica, "1", _named(trainer)) == total
    assert replica.version == "1" and _same(replica, weights)

    weights["model.layers.2.w"].mul_(2)
    trainer.publish("2", weights.items())
    assert _take(replica, "2", _named(trainer)) == weights["model.layers.2.w"].nbytes
    assert _same(replica, weights)

    trainer.publish("3", weights.items())  # a step that changed nothing
    staged = replica.fetch("3", _named(trainer), 20)
    assert staged.changed == [] and staged.moved_bytes == 0


def test_a_replica_serves_the_version_it_holds_to_other_replicas(
    trainer: WeightPublisher,
    holding_1: VersionReceiver,
    second_replica: VersionReceiver,
    registry: EmbeddedRegistry,
    weights: dict[str, torch.Tensor],
) -> None:
    first, second = holding_1, second_replica
    # the trainer is named and still offers the version, the registry knows a replica that has it
    staged = second.fetch("1", _named(trainer), 20)
    assert staged.result is not None and staged.result.sources == [first.source.endpoint if first.source else ""]
    assert staged.by_origin() == {"trainer": 0, "replica": sum(t.nbytes for t in weights.values())}
    second.commit(staged)
    trainer.withdraw("training again")  # what send_weights does once every replica has the version
    assert _same(second, weights)
    records = {r.endpoint: r for r in registry.all()}
    assert records[second.source.endpoint if second.source else ""].identity.weights_version == "1"
    listed = _sources_ls(registry.path, "--format", "json")
    assert {row["endpoint"]: row["version"] for row in json.loads(listed)} == {
        first.source.endpoint if first.source else "": "1",
        second.source.endpoint if second.source else "": "1",
        trainer.endpoint: "1",
    }
    table = _sources_ls(registry.path).splitlines()
    assert table[0].split()[:5] == ["MODEL", "LAYOUT", "RANK", "VERSION", "STATE"]
    assert all(line.split()[3] == "1" for line in table[1:]), table


def test_a_version_nobody_offers_fails_in_its_timeout_and_changes_nothing(
    trainer: WeightPublisher, holding_1: VersionReceiver, weights: dict[str, torch.Tensor]
) -> None:
    started = time.monotonic()
    with pytest.raises(UpdateError, match=r"no source offered version 2 of org/m within 2s"):
        holding_1.fetch("2", _named(trainer), timeout=2)
    assert 2 <= time.monotonic() - started < 10
    assert holding_1.version == "1" and _same(holding_1, weights)


def test_bytes_that_match_no_digest_are_refused_and_the_held_version_stays(
    trainer: WeightPublisher, holding_1: VersionReceiver, weights: dict[str, torch.Tensor]
) -> None:
    held = {n: t.clone() for n, t in weights.items()}
    weights["lm_head.weight"].add_(1.0)
    trainer.publish("2", weights.items())
    weights["lm_head.weight"][0, 0] = 1e6  # changed after its digest was published: corrupt for version 2
    with pytest.raises(UpdateError, match="version 2 of org/m"):
        holding_1.fetch("2", _named(trainer), timeout=10)
    assert holding_1.version == "1" and _same(holding_1, held)


def test_a_version_of_another_shape_is_refused_before_any_byte_moves(
    trainer: WeightPublisher, holding_1: VersionReceiver, weights: dict[str, torch.Tensor]
) -> None:
    other = dict(weights) | {"lm_head.weight": torch.zeros(301, 256)}
    trainer.publish("2", other.items())
    with pytest.raises(LayoutMismatchError, match=r"lm_head.weight: \(301, 256\) float32, the model has"):
        holding_1.fetch("2", _named(trainer), timeout=10)
    assert holding_1.version == "1" and _same(holding_1, weights)
