"""The batched `row-sum-64` (p2p/checksum/batched.py) gives exactly the per-tensor reference's values, for every
dtype, zero-byte and odd-sized tensors, tensors whose bytes arrive in pieces across chunk edges in
any order, tensors off the 4 KiB row grid, and bytes that arrive again after a failed check; and it
reads the device back once per batch, not once per tensor."""

from __future__ import annotations

import random

import pytest
import torch

from modelexpress.p2p.checksum import ROW_SUM_64, RowSums, batched, checksums, row_sum64, row_sums
from modelexpress.p2p.memory import TensorSpec, adopt_tensors, allocate_pool
from modelexpress.p2p.stream import Stream
from tests.helpers.read_backs import count_read_backs

DTYPES = ["float32", "bfloat16", "float16", "int8", "uint8", "float8_e4m3fn", "int64", "bool"]
# sizes around the edges that matter: words (8), blocks (256 B), rows (4 KiB), and none at all
ELEMENTS = [0, 1, 7, 31, 32, 33, 255, 256, 511, 512, 4095, 4096, 4097, 70001]


def _pool(seed: int = 0):  # type: ignore[no-untyped-def]
    specs = [
        TensorSpec(f"t{i}.{dtype}.{n}", dtype, (n,))
        for i, (dtype, n) in enumerate((d, n) for d in DTYPES for n in ELEMENTS)
    ]
    specs.append(TensorSpec("matrix", "bfloat16", (300, 257)))
    layout = allocate_pool(specs)
    generator = torch.Generator().manual_seed(seed)
    for buffer in layout.buffers():
        buffer.copy_(torch.randint(0, 256, buffer.shape, dtype=torch.uint8, generator=generator))
    return layout


def _reference(layout) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name: row_sum64(tensor) for name, tensor in layout.tensors.items()}


def test_whole_tensors_match_the_reference_with_one_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = _pool()
    read_backs = count_read_backs(monkeypatch)
    assert row_sums(layout) == _reference(layout)
    assert len(read_backs) == 1  # 113 tensors, one read-back
    assert checksums(layout, ROW_SUM_64) == _reference(layout)


@pytest.mark.parametrize("chunk", [256, 4096, 1 << 16])
def test_pieces_across_chunk_edges_in_any_order_match_the_reference(chunk: int) -> None:
    layout = _pool(seed=chunk)
    sums = RowSums(layout)
    pieces = [
        (name, start, min(chunk, sums.size(name) - start))
        for name in sums.names
        for start in range(0, sums.size(name), chunk)
    ]
    random.Random(chunk).shuffle(pieces)
    for i in range(0, len(pieces), 7):  # chunks of several tensors' pieces, as READs deliver them
        sums.add_pieces(pieces[i : i + 7])
    assert sums.totals(sums.names) == _reference(layout)


def test_tensors_off_the_block_grid_and_pieces_off_it_are_reduced_whole() -> None:
    buffer = torch.randint(0, 256, (200_000,), dtype=torch.uint8)
    adopted = adopt_tensors({"odd": buffer[3 : 3 + 9999], "words": buffer[16_008 : 16_008 + 40_000].view(torch.int32)})
    assert row_sums(adopted) == _reference(adopted)
    layout = _pool(seed=3)
    sums = RowSums(layout)
    name = next(n for n in sums.names if sums.size(n) > 1000)
    sums.add_pieces([(name, 0, 100), (name, 100, sums.size(name) - 100)])  # an edge off the 4 KiB grid
    assert sums.totals([name]) == {name: row_sum64(layout.tensors[name])}


def test_bytes_that_arrive_again_start_from_zero() -> None:
    layout = _pool(seed=4)
    sums = RowSums(layout)
    name = "matrix"
    size = sums.size(name)
    layout.tensors[name].view(torch.uint8).view(-1)[5] ^= 0xFF  # corrupt, as a bad source would
    sums.add_pieces([(name, 0, size)])
    wrong = sums.totals([name])[name]
    layout.tensors[name].view(torch.uint8).view(-1)[5] ^= 0xFF  # the repair lands the right bytes
    sums.add_pieces([(name, 0, size)])
    right = sums.totals([name])[name]
    assert wrong != right == row_sum64(layout.tensors[name])


def test_any_single_corrupted_word_and_swapped_rows_change_the_batched_value() -> None:
    layout = allocate_pool([TensorSpec("w", "int64", (4096,))])
    words = layout.tensors["w"]
    words.copy_(torch.randint(-(2**62), 2**62, (4096,), dtype=torch.int64))
    clean = row_sums(layout)["w"]
    for position in (0, 511, 512, 4095):
        words[position] += 1
        assert row_sums(layout)["w"] != clean
        words[position] -= 1
    rows = words.view(8, 512)
    rows[[1, 2]] = rows[[2, 1]].clone()
    assert row_sums(layout)["w"] != clean


def test_last_rows_gathered_in_bounded_batches_match_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # a window of 600 words: 3 tensors per gather, so a totals() call of 113 tensors takes dozens of them
    monkeypatch.setattr(batched, "_GATHER_WORDS", 1800)
    layout = _pool(seed=5)
    assert row_sums(layout) == _reference(layout)
    sums = RowSums(layout, ["matrix", "t0.float32.0", "t13.float32.70001"])
    assert sums.names == ["t0.float32.0", "t13.float32.70001", "matrix"], "layout order, only those named"
    sums.add_pieces([(name, 0, sums.size(name)) for name in sums.names])
    assert sums.totals(["matrix", "t0.float32.0"]) == {
        n: row_sum64(layout.tensors[n]) for n in ("matrix", "t0.float32.0")
    }


def test_accumulators_made_from_a_pulls_stream_match_the_reference() -> None:
    layout = _pool(seed=6)
    stream = Stream(layout)
    sums = RowSums.of_stream(layout, stream)
    assert sums.names == stream.names and "t0.float32.0" not in sums.names, "the stream's tensors: empty ones have none"
    sums.add_pieces([(name, 0, sums.size(name)) for name in sums.names])
    reference = _reference(layout)
    assert sums.totals(sums.names) == {name: reference[name] for name in stream.names}
