"""Checksums of tensor bytes, computed where the tensor lives.

Two algorithms, named in the manifest by the source:
- `xxh3-64` over the raw bytes: strong and fast on host memory (the default for DRAM sources);
  GPU bytes would have to be staged through the host at a few GB/s.
- `row-sum-64`, for VRAM sources (`rowsums` computes it for many tensors at once; `row_sum64` here
  is the per-tensor reference): the bytes as little-endian 64-bit words (the last one zero-padded),
  each multiplied by an odd weight that grows with its 4 KiB row, summed modulo 2**64, then mixed
  with the length. One pass of a reduction kernel on the tensor's own device (no host copy), so a
  GPU target verifies at memory bandwidth. It catches any single corrupted word, and rows swapped or
  shifted; it cannot see words swapped inside one row (integrity against torn or stale copies, not
  an adversary).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from itertools import compress
from operator import add, getitem

import numpy
import torch
import xxhash

from modelexpress.p2p.memory import TensorLayout

log = logging.getLogger(__name__)

XXH3_64 = "xxh3-64"
ROW_SUM_64 = "row-sum-64"
ALGORITHMS = (XXH3_64, ROW_SUM_64)
ROW_WORDS = 512
"""`row-sum-64` weighs words by their row of 512 (4 KiB) from the tensor's start."""
_MASK = (1 << 64) - 1

# GPU tensors are hashed through a bounded host staging buffer, never a full host copy.
_STAGING_BYTES = 64 << 20


def tensor_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor's bytes (any dtype, including bf16 and fp8)."""
    if not tensor.is_contiguous():
        raise ValueError("checksums are taken over contiguous tensors; call .contiguous() first")
    return tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)


def checksum(tensor: torch.Tensor, algorithm: str = XXH3_64) -> int:
    """The checksum of the tensor's bytes with `algorithm` (xxh3-64 by default)."""
    if algorithm == ROW_SUM_64:
        return row_sum64(tensor)
    if algorithm != XXH3_64:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    data = tensor_bytes(tensor)
    if data.device.type == "cpu":
        return int(xxhash.xxh3_64_intdigest(data.numpy().data))
    hasher = xxhash.xxh3_64()
    _update(hasher, data)
    return int(hasher.intdigest())


def checksums(layout: TensorLayout, algorithm: str, names: Sequence[str] | None = None) -> dict[str, int]:
    """The checksums of the named tensors of `layout` (all by default): `row-sum-64` batched on each
    device with one host sync (`rowsums`), `xxh3-64` tensor by tensor."""
    if algorithm == ROW_SUM_64:
        from modelexpress.p2p.rowsums import row_sums

        return row_sums(layout, names)
    return {name: checksum(layout.tensors[name], algorithm) for name in (layout.tensors if names is None else names)}


def row_sum_total(tensor: torch.Tensor) -> torch.Tensor:
    """The weighted word sum of `row-sum-64` (before it is mixed with the length), as a one-element int64
    tensor on the tensor's device: queued kernels, no wait for the device."""
    data = tensor_bytes(tensor)
    size = data.numel()
    words = size // 8
    total = torch.zeros(1, dtype=torch.int64, device=data.device)
    rows = words // ROW_WORDS
    if words:
        body = data[: words * 8]
        if body.storage_offset() % 8:  # a word view needs 8-byte alignment
            body = body.clone()
        values = body.view(torch.int64)
        if rows:
            sums = values[: rows * ROW_WORDS].view(rows, ROW_WORDS).sum(dim=1)  # wraps modulo 2**64
            weights = torch.arange(rows, dtype=torch.int64, device=values.device).mul_(2).add_(1)
            total += sums.mul_(weights).sum()
        if words % ROW_WORDS:
            total += values[rows * ROW_WORDS :].sum() * (2 * rows + 1)
    if size % 8:  # the trailing bytes as one zero-padded little-endian word
        shifts = torch.arange(size % 8, dtype=torch.int64, device=data.device).mul_(8)
        total += torch.bitwise_left_shift(data[words * 8 :].to(torch.int64), shifts).sum() * (2 * rows + 1)
    return total


_ROW_SUM_KEY = struct.Struct("<QQ")  # what is hashed: the weighted sum modulo 2**64, then the byte size


def row_sum_digest(total: int, size: int) -> int:
    """The published `row-sum-64` value of a weighted word sum and the tensor's byte size."""
    return int(xxhash.xxh3_64_intdigest(_ROW_SUM_KEY.pack(total & _MASK, size)))


# XXH3-64 (seed 0, default secret) of a 16-byte input, the spec's 9-16 byte path: the two words,
# each xored with a constant taken from the secret, then mixed. Written here as numpy columns, so a
# batch of 100k tensors is hashed in milliseconds; `row_sum_digest` (the xxhash library) stays the
# definition, and a test pins the two together.
_FLIP_TOTAL = numpy.uint64(0x6782737BEA4239B9)  # secret bytes 24..31 xor 32..39
_FLIP_SIZE = numpy.uint64(0xAF56BC3B0996523A)  # secret bytes 40..47 xor 48..55
_AVALANCHE = numpy.uint64(0x165667919E3779F9)
_LOW32, _32, _37, _16 = numpy.uint64(0xFFFFFFFF), numpy.uint64(32), numpy.uint64(37), numpy.uint64(16)


def _folded_product(a: numpy.ndarray, b: numpy.ndarray) -> numpy.ndarray:
    """The 128-bit products of two uint64 columns, their high and low halves xored (from 32-bit parts)."""
    a_lo, a_hi, b_lo, b_hi = a & _LOW32, a >> _32, b & _LOW32, b >> _32
    lo_lo, hi_lo, lo_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi
    cross = (lo_lo >> _32) + (hi_lo & _LOW32) + lo_hi  # < 2**64: no carry lost
    high = (hi_lo >> _32) + (cross >> _32) + a_hi * b_hi
    low = (cross << _32) | (lo_lo & _LOW32)
    folded: numpy.ndarray = high ^ low
    return folded


def row_sum_digests(totals: numpy.ndarray, sizes: numpy.ndarray) -> numpy.ndarray:
    """`row_sum_digest` of many tensors at once, as a uint64 column: `totals`, the weighted sums as
    unsigned 64-bit values (a batch read back from the device), `sizes`, the byte sizes."""
    with numpy.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64, as the hash wants
        first = numpy.asarray(totals, dtype=numpy.uint64) ^ _FLIP_TOTAL
        second = numpy.asarray(sizes, dtype=numpy.int64).astype(numpy.uint64) ^ _FLIP_SIZE
        mixed = _16 + first.byteswap() + second + _folded_product(first, second)
        mixed ^= mixed >> _37
        mixed *= _AVALANCHE
        mixed ^= mixed >> _32
    digests: numpy.ndarray = mixed
    return digests


def row_sum64(tensor: torch.Tensor) -> int:
    """The `row-sum-64` checksum, reduced on the tensor's device (one wait; `rowsums` batches many)."""
    return row_sum_digest(int(row_sum_total(tensor).item()), tensor_bytes(tensor).numel())


def _update(hasher: xxhash.xxh3_64, data: torch.Tensor) -> None:
    """Feed flat uint8 bytes to the hasher; GPU bytes go through a bounded pinned staging buffer."""
    if data.device.type == "cpu":
        hasher.update(data.numpy().data)
        return
    staging = torch.empty(min(_STAGING_BYTES, max(1, data.numel())), dtype=torch.uint8, pin_memory=True)
    for start in range(0, data.numel(), staging.numel()):
        chunk = data[start : start + staging.numel()]
        staging[: chunk.numel()].copy_(chunk)
        hasher.update(staging[: chunk.numel()].numpy().data)


class StreamingChecksums:
    """`xxh3-64` of tensors whose bytes arrive in pieces, in any order, hashed as soon as they line up.

    Each piece is hashed right after its bytes land (still in cache) rather than the whole tensor
    once complete, so only the last piece's hash is left when the transfer ends. Host memory is read
    through one memoryview per region (a piece is a slice of it, no tensor ops per piece: a pull
    of 4096 small tensors hashes thousands of pieces). Not thread-safe: feed it from one thread.
    """

    def __init__(self, layout: TensorLayout) -> None:
        self._tensors = layout.tensors
        host = {
            r.id: b.numpy().data
            for r, b in zip(layout.regions, layout.buffers(), strict=False)
            if r.kind == "DRAM" and b.data_ptr() == r.address  # a buffer is its region's memory, or unused
        }
        # name -> (view of its region, the tensor's offset in it, its size) for tensors in host memory,
        # from the layout's columns (no Python step per tensor: a model may have 100k)
        columns = layout.columns
        names, region_ids = columns.names, columns.region_ids.tolist()
        offsets, sizes = columns.offsets.tolist(), columns.nbytes.tolist()
        if len(host) < len(layout.regions):
            kept = list(map(host.__contains__, region_ids))
            names, region_ids, offsets, sizes = (list(compress(c, kept)) for c in (names, region_ids, offsets, sizes))
        self._spans: dict[str, tuple[memoryview, int, int]] = dict(
            zip(names, zip(map(host.__getitem__, region_ids), offsets, sizes, strict=True), strict=True)
        )
        self._partial: dict[str, tuple[xxhash.xxh3_64, list[int], dict[int, int]]] = {}

    def _bytes(self, name: str, start: int, end: int) -> memoryview | torch.Tensor:
        span = self._spans.get(name)
        if span is None:
            return tensor_bytes(self._tensors[name])[start:end]
        view, offset, _ = span
        return view[offset + start : offset + end]

    def _size(self, name: str) -> int:
        span = self._spans.get(name)
        return span[2] if span else tensor_bytes(self._tensors[name]).numel()

    def add(self, name: str, start: int, length: int) -> int | None:
        """Bytes [start, start + length) of `name` have arrived; its checksum once every byte has."""
        size = self._size(name)
        if start == 0 and length == size and name not in self._partial:
            data = self._bytes(name, 0, size)
            if isinstance(data, memoryview):
                return int(xxhash.xxh3_64_intdigest(data))
            return checksum(self._tensors[name])
        hasher, hashed, waiting = self._partial.setdefault(name, (xxhash.xxh3_64(), [0], {}))
        waiting[start] = length
        while hashed[0] in waiting:  # hash the run of pieces that now continues the hashed prefix
            begin = hashed[0]
            end = begin + waiting.pop(begin)
            data = self._bytes(name, begin, end)
            if isinstance(data, memoryview):
                hasher.update(data)
            else:
                _update(hasher, data)
            hashed[0] = end
        if hashed[0] < size:
            return None
        del self._partial[name]
        return int(hasher.intdigest())

    def add_pieces(self, pieces: Sequence[tuple[str, int, int]]) -> dict[str, int]:
        """`add` for the pieces one READ delivered: the checksums of the tensors they completed. A piece
        that cannot be hashed is logged and left out, so its tensor fails its check."""
        digests: dict[str, int] = {}
        spans, partial, digest = self._spans, self._partial, xxhash.xxh3_64_intdigest
        for name, start, length in pieces:
            span = spans.get(name)
            if span is not None and start == 0 and length == span[2] and name not in partial:
                view, offset, _ = span  # a whole tensor in host memory: most pieces of a pooled model
                digests[name] = digest(view[offset : offset + length])
                continue
            try:
                value = self.add(name, start, length)
            except Exception:  # a failed checksum must be reported, never lost
                log.exception("checksumming %s failed", name)
                continue
            if value is not None:
                digests[name] = value
        return digests

    def add_whole(self, names: Sequence[str]) -> list[int] | None:
        """The checksums of tensors that each arrived whole in one READ, none of them partly hashed
        before: one pass in C over their spans. None when one of them is not in host memory here."""
        spans = list(map(self._spans.get, names))
        if None in spans or not self._partial.keys().isdisjoint(names):
            return None
        views, offsets, sizes = zip(*spans, strict=True) if spans else ((), (), ())
        pieces = map(getitem, views, map(slice, offsets, map(add, offsets, sizes)))
        return list(map(xxhash.xxh3_64_intdigest, pieces))  # type: ignore[arg-type]

    def forget(self, name: str) -> None:
        """Drop what was hashed of `name` (its bytes will arrive again)."""
        self._partial.pop(name, None)
