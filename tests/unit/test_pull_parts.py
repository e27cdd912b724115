"""Parts of a pull on their own: the verification strategy follows the sources' checksum algorithm,
and the sampling policy covers its fraction of the bytes and escalates to checking everything."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.pull.book import Book
from modelexpress.p2p.pull.sampling import Policy, choose_sample
from modelexpress.p2p.pull.verify import RowSumRuns, Verifier, WholeTensors, Xxh3Pieces
from modelexpress.p2p.stream import Stream, make_chunks


@pytest.mark.parametrize(
    ("algorithms", "strategy"),
    [(["xxh3-64"], Xxh3Pieces), (["row-sum-64", "row-sum-64"], RowSumRuns), (["xxh3-64", "row-sum-64"], WholeTensors)],
)
def test_the_strategy_follows_the_sources_checksum_algorithm(algorithms: list[str], strategy: type[Any]) -> None:
    layout = allocate_pool([TensorSpec("a", "float32", (1024,)), TensorSpec("b", "float32", (8,))])
    stream = Stream(layout)
    book = Book(make_chunks(layout, 1 << 20, stream), stream, {"a": 4096, "b": 32})
    linked: list[Any] = [SimpleNamespace(algorithm=a) for a in algorithms]
    verifier = Verifier(layout, book, Policy(), linked)
    try:
        assert type(verifier.strategy) is strategy
    finally:
        verifier.close()


def test_a_sample_covers_its_fraction_and_an_escalation_checks_everything() -> None:
    sizes = {f"t{i}": 100 for i in range(100)}
    sample = choose_sample(sizes, 0.1)
    assert 10 <= len(sample) <= 11 and sample <= set(sizes)
    policy = Policy.of("sampled", sizes, 0.1)
    assert policy.describe(sizes).startswith("sampled (1") and "% of bytes" in policy.describe(sizes)
    outside = next(name for name in sizes if not policy.checks(name))
    inside = next(name for name in sizes if policy.checks(name))
    policy.escalate([outside, inside])
    assert policy.name == "full" and policy.late == {outside} and policy.checks(outside)
    assert not Policy("off").checks(inside)
