"""The local byte stream of a pull: its tensors in stream order as columns (`Stream`), cut into chunks of
pieces (`make_chunks`), and the chunk sizes a pull uses by default. Pure logic over the layout.

Chunks are defined over the *local* byte stream, so they can be striped over several sources whose
layouts differ (`plan.SourceMap` maps them to each source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

import numpy

from modelexpress.bulk import without_gc
from modelexpress.p2p.memory import TensorLayout

DEFAULT_CHUNK_BYTES = 64 << 20
# A GPU reads 64 MiB in tens of microseconds, less than posting a READ costs in Python: bigger chunks.
DEFAULT_VRAM_CHUNK_BYTES = 512 << 20
TAIL_BYTES = 1 << 20
# Into GPU memory each chunk's verification has a fixed cost (the verify thread's launches and
# read-back, a fraction of a millisecond) against microseconds for its bytes, so tapering below this
# buys nothing and adds READs, and verify jobs, to the end of the pull.
VRAM_TAIL_BYTES = 128 << 20


class Piece(NamedTuple):
    """A byte range of one tensor: [start, start + length) of its bytes (a tuple: one per tensor per chunk)."""

    name: str
    start: int
    length: int


@dataclass(frozen=True)
class Chunk:
    """A unit of transfer and retry: consecutive pieces of the local byte stream."""

    index: int
    pieces: tuple[Piece, ...]
    nbytes: int  # the pieces' lengths summed, kept: read per chunk on every arrival
    # stream positions (`Stream`) of the first and the last piece's tensor; -1: look them up by name
    first: int = field(default=-1, compare=False)
    last: int = field(default=-1, compare=False)

    @classmethod
    def of(cls, index: int, pieces: tuple[Piece, ...]) -> Chunk:
        return cls(index, pieces, sum(p.length for p in pieces))


def default_chunk_bytes(layout: TensorLayout) -> int:
    """Bytes per READ when none is configured: 512 MiB into GPU memory, 64 MiB into host memory (there
    the checksum of a chunk runs while its bytes are still in cache)."""
    return DEFAULT_VRAM_CHUNK_BYTES if layout.in_gpu_memory else DEFAULT_CHUNK_BYTES


def default_tail_bytes(layout: TensorLayout) -> int:
    """The smallest chunk the last READs taper to: 1 MiB into host memory, where the final chunk's
    checksum is the work left once it lands; 128 MiB into GPU memory (`VRAM_TAIL_BYTES`)."""
    return VRAM_TAIL_BYTES if layout.in_gpu_memory else TAIL_BYTES


@without_gc
def make_chunks(
    layout: TensorLayout,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    stream: Stream | None = None,
    tail_bytes: int = TAIL_BYTES,
) -> list[Chunk]:
    """Cut the local tensors, in layout order, into chunks of about `chunk_bytes` (large tensors split).

    The last chunks taper (each at most half of what is left, down to `tail_bytes`): what is still
    to do once the final READ lands, its checksum and its completion, shrinks from a whole chunk
    to a sliver, for a handful of extra READs.

    Chunk edges are found by searching the tensors' cumulative ends, and the tensors wholly inside a
    chunk become pieces without a Python step each: a model of 100k tensors is planned in milliseconds.
    """
    stream = stream or Stream(layout)
    total = stream.total
    floor = min(chunk_bytes, tail_bytes)
    bounds = [0]
    while bounds[-1] < total:
        bounds.append(min(total, bounds[-1] + _chunk_size(total - bounds[-1], chunk_bytes, floor)))
    edges = numpy.asarray(bounds, dtype=numpy.int64)
    firsts = numpy.searchsorted(stream.ends, edges[:-1], side="right").tolist()  # first tensor ending after lo
    lasts = (numpy.searchsorted(stream.begins, edges[1:], side="left") - 1).tolist()  # last beginning before hi
    names, sizes, begins = stream.names, stream.sizes, stream.begin_list
    chunks: list[Chunk] = []
    for index, (low, high, first, last) in enumerate(zip(bounds, bounds[1:], firsts, lasts, strict=False)):
        if first == last:
            pieces: tuple[Piece, ...] = (Piece(names[first], low - begins[first], high - low),)
        else:
            whole = map(tuple.__new__, repeat(Piece), zip(names[first + 1 : last], repeat(0), sizes[first + 1 : last]))
            head = Piece(names[first], low - begins[first], begins[first] + sizes[first] - low)
            pieces = (head, *whole, Piece(names[last], 0, high - begins[last]))
        chunks.append(Chunk(index, pieces, high - low, first, last))
    return chunks


class Stream:
    """The layout's tensors that have bytes, in stream order (by region, then offset), as columns;
    made once per pull and shared by its plan and its sources' maps. Built from the layout's columns
    with numpy: a model of 100k tensors is laid out in milliseconds."""

    def __init__(self, layout: TensorLayout) -> None:
        columns = layout.columns
        regions, offsets, sizes = columns.region_ids, columns.offsets, columns.nbytes
        count = len(sizes)
        ordered = (regions[1:] > regions[:-1]) | ((regions[1:] == regions[:-1]) & (offsets[1:] >= offsets[:-1]))
        order = numpy.arange(count) if ordered.all() else numpy.lexsort((offsets, regions))  # stable, as sorted()
        keep = order[sizes[order] > 0]  # empty tensors have no bytes in the stream
        self.order = keep  # stream position -> placement index
        empty = numpy.flatnonzero(sizes == 0).tolist()
        self.empty: list[str] = list(map(columns.names.__getitem__, empty))
        in_order = len(keep) == count and ordered.all()
        self.names: list[str] = list(columns.names) if in_order else list(map(columns.names.__getitem__, keep.tolist()))
        self.region_ids = regions[keep]
        self.offsets = offsets[keep]
        self.size_column = sizes[keep]
        self.sizes: list[int] = self.size_column.tolist()
        self.ends = numpy.cumsum(self.size_column)
        self.begins = self.ends - self.size_column
        self.begin_list: list[int] = self.begins.tolist()
        self.total = int(self.ends[-1]) if len(keep) else 0
        self._positions: dict[str, int] | None = None

    def position(self, name: str) -> int:
        """Where a tensor is in the stream (for chunks made outside `make_chunks`, e.g. repairs)."""
        if self._positions is None:
            self._positions = {name: index for index, name in enumerate(self.names)}
        return self._positions[name]

    def runs(self, chunk: Chunk) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """A chunk cut by `make_chunks`, as columns: the stream positions of its tensors, and the bytes
        [start, stop) of each that it carries (only the first and the last can be partial)."""
        first, last = chunk.first, chunk.last
        positions = numpy.arange(first, last + 1, dtype=numpy.int64)
        starts = numpy.zeros(len(positions), dtype=numpy.int64)
        stops = self.size_column[first : last + 1].copy()
        head, tail = chunk.pieces[0], chunk.pieces[-1]
        starts[0], stops[0] = head.start, head.start + head.length
        if last > first:
            stops[-1] = tail.start + tail.length
        return positions, starts, stops

    def span(self, chunk: Chunk) -> tuple[int, int]:
        """The stream positions of the chunk's first and last tensor (looked up by name when the chunk
        was not cut by `make_chunks`)."""
        head = chunk.first if chunk.first >= 0 else self.position(chunk.pieces[0].name)
        tail = chunk.last if chunk.last >= 0 else self.position(chunk.pieces[-1].name)
        return head, tail


def _chunk_size(remaining: int, chunk_bytes: int, floor: int) -> int:
    return max(1, min(chunk_bytes, max(floor, remaining // 2)))
