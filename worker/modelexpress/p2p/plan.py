"""Planning a pull against one source: match local tensors to its manifest, map the local byte stream
(`stream.Stream`) onto its memory, build the descriptors of each chunk.

Pure logic, no I/O. For a given source each chunk becomes one transfer whose descriptor lists cover
whole address-contiguous runs, including the alignment padding between tensors when both sides have
the same padding (so a pooled model of 4096 small tensors is one descriptor, not 4096).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import ROW_ALIGNMENT, TensorLayout
from modelexpress.p2p.stream import Chunk, Stream


class TensorMismatchError(ValueError):
    """Local and remote tensors do not line up; the message lists the first differences."""


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
