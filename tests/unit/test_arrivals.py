"""Chunk arrivals counted in columns agree with the reference: a set of chunks per tensor, discarded one by one."""

from __future__ import annotations

import random

import pytest
import torch

from modelexpress.p2p.memory import TensorLayout, TensorSpec, adopt_tensors, allocate_pool
from modelexpress.p2p.pull.arrivals import Arrivals
from modelexpress.p2p.stream import Chunk, Piece, Stream, make_chunks

SIZES = [100, 4096, 0, 7, 8192, 300, 1, 0, 5000, 256, 12288, 33, 3 << 20, 0]


def _layouts() -> list[TensorLayout]:
    return [
        allocate_pool([TensorSpec(f"t{i}", "uint8", (n,)) for i, n in enumerate(SIZES)]),
        adopt_tensors({f"t{i}": torch.zeros(n, dtype=torch.uint8) for i, n in enumerate(reversed(SIZES))}),
        allocate_pool([TensorSpec(f"e{i}", "uint8", (1000,)) for i in range(3000)]),  # chunk edges on tensor edges
    ]


def _reference(chunks: list[Chunk]) -> dict[str, set[int]]:
    owners: dict[str, set[int]] = {}
    for chunk in chunks:
        for piece in chunk.pieces:
            owners.setdefault(piece.name, set()).add(chunk.index)
    return owners


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 8192, 5000, 1000, 300])
def test_arrivals_in_any_order_complete_each_tensor_with_its_last_chunk(chunk_bytes: int) -> None:
    for seed, layout in enumerate(_layouts()):
        stream = Stream(layout)
        chunks = make_chunks(layout, chunk_bytes, stream)
        owners = _reference(chunks)
        waiting = {name: set(indices) for name, indices in owners.items()}
        arrivals = Arrivals(chunks, stream)
        assert {name: set(arrivals.chunks_of(name)) for name in owners} == owners
        order = list(range(len(chunks)))
        random.Random(seed).shuffle(order)
        completed: list[str] = []
        for step, index in enumerate(order):
            expected = []
            for piece in chunks[index].pieces:
                waiting[piece.name].discard(index)
                if not waiting[piece.name]:
                    expected.append(piece.name)
            got = arrivals.arrive(chunks[index])
            assert got == expected
            # the same as columns: what the chunk completed as a run of stream positions, its pieces as runs
            assert [stream.names[p] for p in arrivals.positions(chunks[index], got).tolist()] == got
            positions, starts, stops = (column.tolist() for column in stream.runs(chunks[index]))
            pieces = [(stream.names[p], a, b - a) for p, a, b in zip(positions, starts, stops, strict=True)]
            assert pieces == list(chunks[index].pieces)
            completed += got or []
            assert arrivals.arrive(chunks[index]) is None, "a chunk that arrived again completes nothing"
            if step % 7 == 0:
                partly = {n for n, left in waiting.items() if left and left != owners[n]}
                assert set(arrivals.partly_arrived()) == partly
        assert sorted(completed) == sorted(owners), "every tensor with bytes completes exactly once"
        assert arrivals.partly_arrived() == []


def test_a_tensor_fetched_again_waits_for_its_new_chunks_only() -> None:
    layout = allocate_pool([TensorSpec(f"t{i}", "uint8", (n,)) for i, n in enumerate([3000, 5000, 2000])])
    stream = Stream(layout)
    chunks = make_chunks(layout, 2048, stream)
    arrivals = Arrivals(chunks, stream)
    for chunk in chunks:
        arrivals.arrive(chunk)
    repair = [Chunk.of(len(chunks) + i, (Piece("t1", i * 2500, 2500),)) for i in range(2)]
    arrivals.refetch("t1", [c.index for c in repair])
    assert arrivals.chunks_of("t1") == [c.index for c in repair]
    assert arrivals.arrive(chunks[1]) is None, "a planned chunk does not count for the re-fetch"
    assert arrivals.arrive(repair[1]) == [] and arrivals.partly_arrived() == ["t1"]
    assert arrivals.arrive(repair[0]) == ["t1"]
    again = [Chunk.of(len(chunks) + 2, (Piece("t1", 0, 5000),))]
    arrivals.refetch("t1", [again[0].index])
    assert arrivals.arrive(repair[0]) is None, "a chunk of a replaced re-fetch completes nothing"
    arrivals.drop("t1")
    assert arrivals.chunks_of("t1") == [] and arrivals.arrive(again[0]) is None
    with pytest.raises(ValueError, match="t0: a re-fetch needs chunks of its own"):
        arrivals.refetch("t0", [0])


def test_chunks_without_stream_positions_are_refused() -> None:
    layout = allocate_pool([TensorSpec("a", "uint8", (10,))])
    with pytest.raises(ValueError, match="make_chunks"):
        Arrivals([Chunk.of(0, (Piece("a", 0, 10),))], Stream(layout))
