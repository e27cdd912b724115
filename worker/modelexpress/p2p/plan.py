"""Planning a pull: match local tensors to a source's manifest, cut the bytes into chunks, build descriptors.

Pure logic, no I/O. Chunks are defined over the *local* byte stream (so they can be striped over
several sources whose layouts differ); for a given source each chunk becomes one transfer whose
descriptor lists cover whole address-contiguous runs, including the alignment padding between
tensors when both sides have the same padding (so a pooled model of 4096 small tensors is one
descriptor, not 4096).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

import numpy

from modelexpress.bulk import without_gc
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import ROW_ALIGNMENT, TensorLayout

DEFAULT_CHUNK_BYTES = 64 << 20
# A GPU reads 64 MiB in tens of microseconds, less than posting a READ costs in Python: bigger chunks.
DEFAULT_VRAM_CHUNK_BYTES = 512 << 20
TAIL_BYTES = 1 << 20
# Into GPU memory each chunk's verification costs a few hundred microseconds of fixed work (the verify
# thread's launches and read-back, ~0.3 ms measured on a CPU) against microseconds for its bytes, so
# tapering below this buys nothing and adds READs, and verify jobs, to the end of the pull.
VRAM_TAIL_BYTES = 128 << 20


class TensorMismatchError(ValueError):
    """Local and remote tensors do not line up; the message lists the first differences."""


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


@dataclass(frozen=True)
class Descriptor:
    """One contiguous run: local address, remote address, length (device ids come from the regions)."""

    local_address: int
    remote_address: int
    length: int


def match(layout: TensorLayout, manifest: Manifest, limit: int = 10) -> numpy.ndarray:
    """Each local tensor's row in the source's manifest, in layout order; raises listing the first
    `limit` differences (a name the source does not serve, another dtype or shape)."""
    names, dtypes, shapes = layout.columns[:3]
    served = manifest.columns
    # the usual case, the same tensors in the same order (both sides built the same model): compared
    # column by column, without a lookup per name
    if served.names == names and served.dtypes == dtypes and served.shapes == shapes:
        return numpy.arange(len(names), dtype=numpy.int64)
    found = list(map(manifest.rows.get, names))
    # everything served as we hold it, in another order (or among other tensors)
    if None not in found:
        rows: list[int] = found  # type: ignore[assignment]
        if (
            list(map(served.dtypes.__getitem__, rows)) == dtypes
            and list(map(served.shapes.__getitem__, rows)) == shapes
        ):
            return numpy.asarray(rows, dtype=numpy.int64)
    problems: list[str] = []
    for name, dtype, shape, row in zip(names, dtypes, shapes, found, strict=True):
        if row is None:
            problems.append(f"{name}: not served by the source")
        elif (served.dtypes[row], served.shapes[row]) != (dtype, shape):
            problems.append(
                f"{name}: local {dtype}{list(shape)} != source {served.dtypes[row]}{list(served.shapes[row])}"
            )
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    raise TensorMismatchError(
        f"{len(problems)} tensor(s) do not match the source's manifest{more}: " + "; ".join(problems[:limit])
    )


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


class SourceMap:
    """Where the local byte stream lies at one source, built once per source (at link time, before the
    READs): the stream, in layout order, cut into maximal runs of tensors that continue at the same
    distance on both sides, in the same regions, with less than ROW_ALIGNMENT of padding between them
    (identical on both sides, so it is read along rather than splitting the run: a pool puts tensors
    of 4 KiB or more on 4 KiB boundaries, and a run broken at every such tensor whose size is not a
    multiple of 4 KiB would be one descriptor per tensor, the slowest way to READ GPU memory). A chunk's
    descriptors then cost one step per run it touches, not one per tensor: a pooled model of 4096
    small tensors is one run."""

    def __init__(
        self, layout: TensorLayout, manifest: Manifest, rows: numpy.ndarray, stream: Stream | None = None
    ) -> None:
        """`rows`: each local tensor's row in the source's `manifest` (what `match` gives)."""
        stream = self._stream = stream or Stream(layout)
        count = len(stream.names)
        theirs = rows[stream.order]
        remote_region_ids = manifest.columns.region_ids[theirs]
        self._remote_regions: list[int] = remote_region_ids.tolist()
        local = _bases({r.id: r.address for r in layout.regions}, stream.region_ids, stream.names, "local")
        remote_bases = {r.id: r.address for r in manifest.regions}
        there = _bases(remote_bases, remote_region_ids, stream.names, "the source's") + manifest.columns.offsets[theirs]
        self.remote_rows = theirs  # by stream position: the tensor's row in the source's manifest
        local += stream.offsets
        delta = there - local
        end = local + stream.size_column
        lr, rr = stream.region_ids, remote_region_ids
        gap = local[1:] - end[:-1]
        continues = (
            (lr[1:] == lr[:-1]) & (rr[1:] == rr[:-1]) & (delta[1:] == delta[:-1]) & (gap >= 0) & (gap < ROW_ALIGNMENT)
        )
        opens = numpy.concatenate([numpy.ones(min(1, count), dtype=bool), ~continues])
        firsts = numpy.flatnonzero(opens)
        self._starts: list[int] = local[firsts].tolist()  # local address where each run begins
        self._ends: list[int] = end[numpy.append(firsts[1:] - 1, count - 1)].tolist() if count else []
        self._deltas: list[int] = delta[firsts].tolist()  # remote address - local address, along the run
        self._run: list[int] = (numpy.cumsum(opens) - 1).tolist()  # by stream position: the tensor's run
        self._local: list[int] = local.tolist()  # and its local address

    def remote_region(self, chunk: Chunk) -> int:
        """The source's region holding the chunk's first bytes."""
        return self._remote_regions[self._stream.span(chunk)[0]]

    def descriptors(self, chunk: Chunk) -> list[Descriptor]:
        """Coalesced (local, remote, length) runs of a chunk (consecutive pieces of the stream)."""
        first, last = chunk.pieces[0], chunk.pieces[-1]
        head, tail = self._stream.span(chunk)
        run, final = self._run[head], self._run[tail]
        low, high = self._local[head] + first.start, self._local[tail] + last.start + last.length
        out: list[Descriptor] = []
        for index in range(run, final + 1):
            begin = low if index == run else self._starts[index]
            end = high if index == final else self._ends[index]
            if end > begin:
                out.append(Descriptor(begin, begin + self._deltas[index], end - begin))
        return out


def _bases(addresses: dict[int, int], region_ids: numpy.ndarray, names: list[str], side: str) -> numpy.ndarray:
    """The base address of each tensor's region; a region missing from `addresses` is refused by name."""
    known = numpy.asarray(sorted(addresses), dtype=numpy.int64)
    where = numpy.searchsorted(known, region_ids).clip(max=max(len(known) - 1, 0))
    missing = numpy.flatnonzero(known[where] != region_ids) if len(known) else numpy.arange(len(region_ids))
    if len(missing):
        first = int(missing[0])
        raise TensorMismatchError(f"{names[first]}: in {side} region {int(region_ids[first])}, which is not described")
    bases: numpy.ndarray = numpy.asarray([addresses[i] for i in known.tolist()], dtype=numpy.int64)[where]
    return bases
