"""Planning a pull: match local tensors to a source's manifest, cut the bytes into chunks, build descriptors.

Pure logic, no I/O. Chunks are defined over the *local* byte stream (so they can be striped over
several sources whose layouts differ); for a given source each chunk becomes one transfer whose
descriptor lists cover whole address-contiguous runs, including the alignment padding between
tensors when both sides have the same padding (so a pooled model of 4096 small tensors is one
descriptor, not 4096).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import NamedTuple

from modelexpress.bulk import without_gc
from modelexpress.p2p.manifest import Manifest, TensorEntry
from modelexpress.p2p.memory import ALIGNMENT, Placement, TensorLayout

DEFAULT_CHUNK_BYTES = 64 << 20
# A GPU reads 64 MiB in tens of microseconds, less than posting a READ costs in Python: bigger chunks.
DEFAULT_VRAM_CHUNK_BYTES = 512 << 20
TAIL_BYTES = 1 << 20


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

    @property
    def nbytes(self) -> int:
        return sum(p.length for p in self.pieces)


@dataclass(frozen=True)
class Descriptor:
    """One contiguous run: local address, remote address, length (device ids come from the regions)."""

    local_address: int
    remote_address: int
    length: int


def match(layout: TensorLayout, manifest: Manifest, limit: int = 10) -> dict[str, TensorEntry]:
    """The remote entry of every local tensor; raises listing the first `limit` differences."""
    remote = manifest.by_name()
    specs = list(map(operator.attrgetter("spec"), layout.placements))
    names = list(map(operator.attrgetter("name"), specs))
    found = list(map(remote.get, names))
    # the common case, everything served as we hold it, compared without a Python step per tensor
    if None not in found:
        theirs = list(map(operator.itemgetter(1, 2), found))  # type: ignore[arg-type]
        if theirs == list(map(operator.attrgetter("dtype", "shape"), specs)):
            return dict(zip(names, found, strict=True))
    problems: list[str] = []
    for placement in layout.placements:
        spec = placement.spec
        entry = remote.get(spec.name)
        if entry is None:
            problems.append(f"{spec.name}: not served by the source")
        elif (entry.dtype, entry.shape) != (spec.dtype, spec.shape):
            problems.append(
                f"{spec.name}: local {spec.dtype}{list(spec.shape)} != source {entry.dtype}{list(entry.shape)}"
            )
    if problems:
        more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
        raise TensorMismatchError(
            f"{len(problems)} tensor(s) do not match the source's manifest{more}: " + "; ".join(problems[:limit])
        )
    return {p.spec.name: remote[p.spec.name] for p in layout.placements}


def default_chunk_bytes(layout: TensorLayout) -> int:
    """Bytes per READ when none is configured: 512 MiB into GPU memory, 64 MiB into host memory (there
    the checksum of a chunk runs while its bytes are still in cache)."""
    return DEFAULT_VRAM_CHUNK_BYTES if layout.in_gpu_memory else DEFAULT_CHUNK_BYTES


@without_gc
def make_chunks(layout: TensorLayout, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Chunk]:
    """Cut the local tensors, in layout order, into chunks of about `chunk_bytes` (large tensors split).

    The last chunks taper (each at most half of what is left, down to `TAIL_BYTES`): what is still
    to do once the final READ lands, its checksum and its completion, shrinks from a whole chunk
    to a sliver, for a handful of extra READs.
    """
    remaining = sum(p.spec.nbytes for p in layout.placements)
    floor = min(chunk_bytes, TAIL_BYTES)
    chunks: list[Chunk] = []
    current: list[Piece] = []
    size = 0
    target = _chunk_size(remaining, chunk_bytes, floor)
    ordered = sorted(layout.placements, key=lambda p: (p.region_id, p.offset))
    for placement in ordered:
        nbytes = placement.spec.nbytes
        start = 0
        while start < nbytes:
            take = min(nbytes - start, target - size)
            current.append(Piece(placement.spec.name, start, take))
            size += take
            start += take
            if size >= target:
                chunks.append(Chunk(len(chunks), tuple(current)))
                remaining -= size
                current, size = [], 0
                target = _chunk_size(remaining, chunk_bytes, floor)
    if current:
        chunks.append(Chunk(len(chunks), tuple(current)))
    return chunks


def _chunk_size(remaining: int, chunk_bytes: int, floor: int) -> int:
    return max(1, min(chunk_bytes, max(floor, remaining // 2)))


def tensors_of_chunks(chunks: list[Chunk]) -> dict[str, set[int]]:
    """For each tensor, the chunks that carry some of its bytes (it is complete when all have arrived)."""
    owners: dict[str, set[int]] = {}
    for chunk in chunks:
        for piece in chunk.pieces:
            owners.setdefault(piece.name, set()).add(chunk.index)
    return owners


def descriptors(
    chunk: Chunk,
    local: dict[str, Placement],
    local_regions: dict[int, int],
    remote: dict[str, TensorEntry],
    remote_regions: dict[int, int],
) -> list[Descriptor]:
    """Coalesced (local, remote, length) runs of a chunk for one source.

    `local_regions` / `remote_regions` map region id to base address. Two pieces merge when both
    sides continue at the same distance (< ALIGNMENT of padding, identical on both sides) and lie in
    the same regions, so padding is read along rather than splitting the run.
    """
    runs: list[list[int]] = []  # [local_address, remote_address, length, local_region, remote_region]
    for piece in chunk.pieces:
        lp, re_ = local[piece.name], remote[piece.name]
        laddr = local_regions[lp.region_id] + lp.offset + piece.start
        raddr = remote_regions[re_.region_id] + re_.offset + piece.start
        if runs:
            last = runs[-1]
            gap_local = laddr - (last[0] + last[2])
            gap_remote = raddr - (last[1] + last[2])
            if (
                last[3] == lp.region_id
                and last[4] == re_.region_id
                and gap_local == gap_remote
                and 0 <= gap_local < ALIGNMENT
            ):
                last[2] += gap_local + piece.length
                continue
        runs.append([laddr, raddr, piece.length, lp.region_id, re_.region_id])
    return [Descriptor(r[0], r[1], r[2]) for r in runs if r[2] > 0]
