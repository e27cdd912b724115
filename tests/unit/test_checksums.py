"""Tensor checksums: `row-sum-64` against a plain-Python reference, what it detects, and xxh3 streaming."""

from __future__ import annotations

import struct

import numpy
import pytest
import torch
import xxhash

from modelexpress.p2p.checksum import (
    ROW_SUM_64,
    XXH3_64,
    StreamingChecksums,
    checksum,
    row_sum64,
    row_sum_digest,
    row_sum_digests,
    tensor_bytes,
)
from modelexpress.p2p.memory import adopt_tensors

ROW_WORDS = 512


def reference_row_sum64(data: bytes) -> int:
    """The algorithm as documented: little-endian words (last zero-padded), odd weights by 4 KiB row."""
    padded = data + b"\0" * (-len(data) % 8)
    total = 0
    for index in range(len(padded) // 8):
        (word,) = struct.unpack_from("<Q", padded, index * 8)
        total += word * (2 * (index // ROW_WORDS) + 1)
    return xxhash.xxh3_64_intdigest(struct.pack("<QQ", total % (1 << 64), len(data)))


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4095, 4096, 4097, 8 * ROW_WORDS * 3 + 5, 8 * ROW_WORDS * 2])
def test_row_sum_matches_the_reference(size: int) -> None:
    data = torch.randint(0, 256, (size,), dtype=torch.uint8, generator=torch.Generator().manual_seed(size))
    assert row_sum64(data) == reference_row_sum64(bytes(data.tolist()))


def test_row_sum_digests_of_a_batch_equal_xxh3_of_each_packed_pair() -> None:
    """The batch digest (XXH3 of 16 bytes written as numpy columns) against the xxhash library, value
    by value: random totals and sizes over the whole 64-bit range, and the edges."""
    generator = numpy.random.default_rng(22)
    totals = generator.integers(0, 2**64, 20_000, dtype=numpy.uint64, endpoint=False)
    sizes = generator.integers(0, 2**62, 20_000, dtype=numpy.int64)
    edges_t = numpy.array([0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 0x6782737BEA4239B9], dtype=numpy.uint64)
    edges_s = numpy.array([0, 1, 7, 4096, 2**32, 2**62, 2**63 - 1], dtype=numpy.int64)
    totals, sizes = numpy.concatenate([totals, edges_t]), numpy.concatenate([sizes, edges_s])
    got = row_sum_digests(totals, sizes)
    assert got.dtype == numpy.uint64 and len(got) == len(totals)
    want = [
        xxhash.xxh3_64_intdigest(struct.pack("<QQ", t, n)) for t, n in zip(totals.tolist(), sizes.tolist(), strict=True)
    ]
    assert got.tolist() == want
    assert got.tolist() == [row_sum_digest(t, n) for t, n in zip(totals.tolist(), sizes.tolist(), strict=True)]
    assert row_sum_digests(numpy.zeros(0, dtype=numpy.uint64), numpy.zeros(0, dtype=numpy.int64)).tolist() == []


def test_row_sum_reads_bytes_of_any_dtype_and_alignment() -> None:
    gen = torch.Generator().manual_seed(1)
    for tensor in (
        torch.randn(300, 17, generator=gen).to(torch.bfloat16),
        torch.randn(64, 33, generator=gen).to(torch.float8_e4m3fn),
        torch.randint(-9, 9, (1000,), dtype=torch.int64, generator=gen),
    ):
        assert row_sum64(tensor) == reference_row_sum64(bytes(tensor_bytes(tensor).tolist()))
    base = torch.randint(0, 256, (50_003,), dtype=torch.uint8, generator=gen)
    unaligned = base[3:]  # storage offset 3: no 64-bit view of it exists in place
    assert row_sum64(unaligned) == row_sum64(unaligned.clone()) == reference_row_sum64(bytes(unaligned.tolist()))


def test_row_sum_detects_flips_shifts_and_row_swaps() -> None:
    good = torch.randint(0, 256, (8 * ROW_WORDS * 4,), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    want = row_sum64(good)
    for position in (0, 7, 4096, len(good) - 1):
        bad = good.clone()
        bad[position] ^= 0x10
        assert row_sum64(bad) != want, position
    rows = good.view(4, -1)
    assert row_sum64(rows[[1, 0, 2, 3]].reshape(-1)) != want, "two rows swapped"
    assert row_sum64(torch.roll(good, 8)) != want, "shifted by a word"
    assert row_sum64(good[:-1]) != want, "one byte short"


def test_checksum_dispatches_by_algorithm() -> None:
    tensor = torch.arange(100, dtype=torch.float32)
    assert checksum(tensor) == checksum(tensor, XXH3_64) == xxhash.xxh3_64_intdigest(tensor.numpy().tobytes())
    assert checksum(tensor, ROW_SUM_64) == row_sum64(tensor)
    with pytest.raises(ValueError, match="unknown checksum algorithm 'md5'; known: xxh3-64, row-sum-64"):
        checksum(tensor, "md5")


def test_streaming_checksums_match_whole_tensor_checksums_in_any_order() -> None:
    gen = torch.Generator().manual_seed(3)
    tensors = {
        "a": torch.randint(0, 255, (1000,), dtype=torch.uint8, generator=gen),
        "b": torch.randn(64, 33, generator=gen).to(torch.bfloat16),
    }
    layout = adopt_tensors(tensors)
    assert all(r.kind == "DRAM" for r in layout.regions)
    hashes = StreamingChecksums(layout)
    pieces = [("a", 0, 400), ("b", 2000, 2224), ("a", 700, 300), ("b", 0, 2000), ("a", 400, 300)]
    results = {name: hashes.add(name, start, length) for name, start, length in pieces}
    assert results["a"] == checksum(tensors["a"]) and results["b"] == checksum(tensors["b"])
    assert hashes.add("a", 0, 1000) == checksum(tensors["a"]), "a whole tensor in one piece"
    assert hashes.add("b", 0, 10) is None
    hashes.forget("b")
    assert hashes.add("b", 0, tensors["b"].numel() * 2) == checksum(tensors["b"])


def test_streaming_checksums_of_a_chunk_of_pieces_equal_piece_by_piece() -> None:
    from modelexpress.p2p.memory import TensorSpec, allocate_pool

    pool = allocate_pool([TensorSpec(f"t{i}", "uint8", (n,)) for i, n in enumerate([5000, 0, 17, 9000, 300])])
    for i, tensor in enumerate(pool.tensors.values()):
        tensor.copy_(torch.arange(tensor.numel(), dtype=torch.int64).add_(i * 7).remainder_(251).to(torch.uint8))
    expected = {name: checksum(tensor) for name, tensor in pool.tensors.items() if tensor.numel()}
    one_by_one, batched = StreamingChecksums(pool), StreamingChecksums(pool)
    # a READ's pieces: the tail of one tensor, whole ones, the head of the next; then the rest
    first = [("t0", 3000, 2000), ("t2", 0, 17), ("t3", 0, 4000)]
    second = [("t0", 0, 3000), ("t3", 4000, 5000), ("t4", 0, 300)]
    got: dict[str, int] = {}
    for chunk in (first, second):
        reference = {n: d for n, s, length in chunk if (d := one_by_one.add(n, s, length)) is not None}
        digests = batched.add_pieces(chunk)
        assert digests == reference
        got.update(digests)
    assert got == expected
    assert batched.add_pieces([("missing", 0, 1), ("t4", 0, 300)]) == {"t4": expected["t4"]}, "a bad piece is left out"


def test_streaming_checksums_of_whole_tensors_in_one_pass_equal_the_reference() -> None:
    from modelexpress.p2p.memory import TensorLayout, TensorSpec, allocate_pool

    sizes = [5000, 0, 17, 9000, 300, 4096]
    pool = allocate_pool([TensorSpec(f"t{i}", "uint8", (n,)) for i, n in enumerate(sizes)])
    for i, tensor in enumerate(pool.tensors.values()):
        tensor.copy_(torch.arange(tensor.numel(), dtype=torch.int64).add_(i * 13).remainder_(251).to(torch.uint8))
    hashes = StreamingChecksums(pool)
    names = [f"t{i}" for i in (0, 2, 3, 4, 5, 1)]
    assert hashes.add_whole(names) == [checksum(pool.tensors[name]) for name in names]
    assert hashes.add_whole([]) == []
    assert hashes.add("t3", 0, 4096) is None  # t3 is partly hashed: not whole in one READ
    assert hashes.add_whole(["t0", "t3"]) is None
    other = allocate_pool([TensorSpec("x", "uint8", (64,))], region_id=1)
    both = TensorLayout(
        [*pool.regions, *other.regions], [*pool.placements, *other.placements], {**pool.tensors, **other.tensors},
        pool.buffers(),  # x's region has no host view here: it is hashed as a tensor, not in the pass
    )  # fmt: skip
    assert StreamingChecksums(both).add_whole(["t0", "x"]) is None
