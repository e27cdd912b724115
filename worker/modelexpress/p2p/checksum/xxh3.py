"""`xxh3-64` over a tensor's raw bytes: strong and fast on host memory (the default for DRAM sources);
GPU bytes are staged through the host at a few GB/s. `StreamingChecksums` hashes bytes as they land.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import compress
from operator import add, getitem

import torch
import xxhash

from modelexpress.p2p.checksum.views import tensor_bytes
from modelexpress.p2p.memory import TensorLayout

log = logging.getLogger(__name__)

# GPU tensors are hashed through a bounded host staging buffer, never a full host copy.
_STAGING_BYTES = 64 << 20


def xxh3_64(tensor: torch.Tensor) -> int:
    """The `xxh3-64` of the tensor's bytes."""
    data = tensor_bytes(tensor)
    if data.device.type == "cpu":
        return int(xxhash.xxh3_64_intdigest(data.numpy().data))
    hasher = xxhash.xxh3_64()
    _update(hasher, data)
    return int(hasher.intdigest())


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
            return xxh3_64(self._tensors[name])
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
