"""The tensor manifest of one worker rank, and its compact paged encoding for gRPC.

A manifest lists every tensor a worker serves (parameters and non-parameters such as FP8 scales)
with dtype, shape, byte size, region and offset, and checksum, under the worker's identity. It is
built for 100k+ tensors: sent as a header then pages, names front-coded within a page (consecutive
names share long prefixes such as `model.layers.17.mlp.`), shapes packed.
"""

from __future__ import annotations

import itertools
import operator
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import xxhash

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.bulk import without_gc
from modelexpress.p2p.checksum import ROW_SUM_64, XXH3_64
from modelexpress.p2p.checksum import checksums as compute_checksums
from modelexpress.p2p.dtypes import NAME_TO_WIRE, WIRE_TO_NAME
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import Region, TensorLayout

DEFAULT_PAGE_SIZE = 4096
_KIND_TO_WIRE = {"DRAM": worker_pb2.MEMORY_KIND_DRAM, "VRAM": worker_pb2.MEMORY_KIND_VRAM}
_WIRE_TO_KIND = {v: k for k, v in _KIND_TO_WIRE.items()}
_ALGORITHM_TO_WIRE = {
    XXH3_64: worker_pb2.CHECKSUM_ALGORITHM_XXH3_64,
    ROW_SUM_64: worker_pb2.CHECKSUM_ALGORITHM_ROW_SUM_64,
}
_WIRE_TO_ALGORITHM = {v: k for k, v in _ALGORITHM_TO_WIRE.items()}


class ManifestError(ValueError):
    """A manifest that is malformed or does not fit the local layout."""


class TensorEntry(NamedTuple):
    """One served tensor. A named tuple, not a frozen dataclass: a 100k-tensor manifest is decoded
    into 100k of these, and a tuple is built five times faster."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    region_id: int
    offset: int
    checksum: int
    is_parameter: bool = True


@dataclass(frozen=True)
class Manifest:
    identity: WorkerIdentity
    regions: tuple[Region, ...]
    tensors: tuple[TensorEntry, ...]
    version: str
    checksum_algorithm: str = XXH3_64

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def by_name(self) -> dict[str, TensorEntry]:
        return dict(zip(map(operator.itemgetter(0), self.tensors), self.tensors, strict=True))

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        identity: WorkerIdentity,
        layout: TensorLayout,
        checksums: dict[str, int] | None = None,
        algorithm: str = "auto",
    ) -> Manifest:
        """The manifest of a layout; checksums are computed (with `checksum_algorithm`) unless given."""
        algorithm = checksum_algorithm(layout, algorithm)
        if checksums is None:
            checksums = compute_checksums(layout, algorithm)
        entries = tuple(
            TensorEntry(
                name=p.spec.name,
                dtype=p.spec.dtype,
                shape=p.spec.shape,
                nbytes=p.spec.nbytes,
                region_id=p.region_id,
                offset=p.offset,
                checksum=checksums[p.spec.name],
                is_parameter=p.spec.is_parameter,
            )
            for p in layout.placements
        )
        return cls(identity, tuple(layout.regions), entries, _version(entries), algorithm)

    # --- wire encoding --------------------------------------------------------------------------

    def to_chunks(self, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[worker_pb2.ManifestChunk]:
        page_size = page_size or DEFAULT_PAGE_SIZE
        yield worker_pb2.ManifestChunk(
            header=worker_pb2.ManifestHeader(
                identity=self.identity.to_proto(),
                tensor_count=len(self.tensors),
                total_bytes=self.total_bytes,
                checksum_algorithm=_ALGORITHM_TO_WIRE[self.checksum_algorithm],
                regions=[
                    worker_pb2.MemoryRegion(
                        id=r.id, kind=_KIND_TO_WIRE[r.kind], device_id=r.device_id, address=r.address, length=r.length
                    )
                    for r in self.regions
                ],
                manifest_version=self.version,
            )
        )
        for first in range(0, len(self.tensors), page_size):
            yield worker_pb2.ManifestChunk(page=_encode_page(first, self.tensors[first : first + page_size]))

    @classmethod
    @without_gc
    def from_chunks(cls, chunks: Iterable[worker_pb2.ManifestChunk]) -> Manifest:
        iterator = iter(chunks)
        first = next(iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ManifestError("manifest stream did not start with a header")
        header = first.header
        algorithm = _WIRE_TO_ALGORITHM.get(header.checksum_algorithm)
        if algorithm is None:
            raise ManifestError(
                f"unsupported checksum algorithm {header.checksum_algorithm} (this worker knows "
                f"{', '.join(_ALGORITHM_TO_WIRE)}): upgrade it to the source's version"
            )
        entries: list[TensorEntry] = []
        for chunk in iterator:
            if chunk.WhichOneof("part") != "page":
                raise ManifestError("a second header in the manifest stream")
            if chunk.page.first_index != len(entries):
                raise ManifestError(f"manifest page starts at {chunk.page.first_index}, expected {len(entries)}")
            entries.extend(_decode_page(chunk.page, len(entries)))
        if len(entries) != header.tensor_count:
            raise ManifestError(f"manifest announced {header.tensor_count} tensors, got {len(entries)}")
        regions = tuple(Region(r.id, _WIRE_TO_KIND[r.kind], r.device_id, r.address, r.length) for r in header.regions)
        manifest = cls(
            WorkerIdentity.from_proto(header.identity), regions, tuple(entries), header.manifest_version, algorithm
        )
        if _version(manifest.tensors) != manifest.version:
            raise ManifestError("manifest version does not match its contents (changed while it was sent?)")
        return manifest


def checksum_algorithm(layout: TensorLayout, choice: str = "auto") -> str:
    """The checksum a source of `layout` publishes: `auto` is `row-sum-64` when any region is GPU
    memory (so targets verify on their GPU), else `xxh3-64`."""
    if choice != "auto":
        return choice
    return ROW_SUM_64 if layout.in_gpu_memory else XXH3_64


def _encode_page(first: int, entries: Sequence[TensorEntry]) -> worker_pb2.TensorPage:
    names, shared = [], []
    previous = ""
    for entry in entries:
        common = _common_prefix(previous, entry.name)
        names.append(entry.name[common:])
        shared.append(common)
        previous = entry.name
    return worker_pb2.TensorPage(
        first_index=first,
        name_suffixes=names,
        shared_prefix_lengths=shared,
        dtypes=[NAME_TO_WIRE[e.dtype] for e in entries],  # type: ignore[misc]
        ranks=[len(e.shape) for e in entries],
        dims=list(itertools.chain.from_iterable(e.shape for e in entries)),
        nbytes=[e.nbytes for e in entries],
        region_ids=[e.region_id for e in entries],
        offsets=[e.offset for e in entries],
        checksums=[e.checksum for e in entries],
        non_parameters=[i for i, e in enumerate(entries) if not e.is_parameter],
    )


def _decode_page(page: worker_pb2.TensorPage, first: int) -> list[TensorEntry]:
    """The entries of one page. Per-tensor work is left to C (map, zip, join) where it can be: a target
    decodes every page of every source before its first READ."""
    count = len(page.name_suffixes)
    columns = (page.shared_prefix_lengths, page.dtypes, page.ranks, page.nbytes, page.region_ids, page.offsets)
    if any(len(column) != count for column in (*columns, page.checksums)):
        raise ManifestError(f"manifest page at tensor {first}: its columns have different lengths")
    keeps = list(page.shared_prefix_lengths)
    names: list[str] = []
    previous = ""
    for suffix, keep in zip(page.name_suffixes, keeps, strict=True):
        previous = previous[:keep] + suffix
        names.append(previous)
    # each kept prefix must fit in the name before it (slicing would silently shorten it)
    if count and (keeps[0] != 0 or not all(map(operator.le, keeps[1:], map(len, names)))):
        bad = next(i for i, keep in enumerate(keeps) if keep > (len(names[i - 1]) if i else 0))
        raise ManifestError(f"tensor {first + bad}: prefix longer than the previous name")
    try:
        dtypes = [WIRE_TO_NAME[d] for d in page.dtypes]
    except KeyError as exc:
        raise ManifestError(f"manifest page at tensor {first}: unknown dtype {exc}") from None
    dims = list(page.dims)
    ranks = list(page.ranks)
    if sum(ranks) != len(dims):
        raise ManifestError(f"manifest page at tensor {first}: shapes need {sum(ranks)} dims, got {len(dims)}")
    shapes: list[tuple[int, ...]]
    if ranks and min(ranks) == max(ranks) > 0:  # one rank for the whole page (the usual case): tuples by zip
        shapes = list(zip(*[iter(dims)] * ranks[0], strict=True))
    else:
        ends = list(itertools.accumulate(ranks))
        shapes = [tuple(dims[end - rank : end]) for rank, end in zip(ranks, ends, strict=True)]
    parameters = [True] * count
    for index in page.non_parameters:
        if index >= count:
            raise ManifestError(f"manifest page at tensor {first}: non-parameter index {index} out of range")
        parameters[index] = False
    rows = zip(
        names, dtypes, shapes, page.nbytes, page.region_ids, page.offsets, page.checksums, parameters, strict=True
    )
    # tuple.__new__ builds each named tuple in C; the class's own __new__ is a Python function
    return list(map(tuple.__new__, itertools.repeat(TensorEntry), rows))


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _version(entries: Sequence[TensorEntry]) -> str:
    """A digest of every field of every entry (names, then each numeric column packed)."""
    field = operator.itemgetter
    digest = xxhash.xxh3_64("\n".join(map(field(0), entries)).encode())
    digest.update(" ".join(map(field(1), entries)).encode())
    shapes = list(map(field(2), entries))
    # (rank, *dims) of every entry, flattened without a Python step per entry
    ranked = itertools.chain.from_iterable(zip(zip(map(len, shapes)), shapes, strict=True))
    digest.update(array("Q", itertools.chain.from_iterable(ranked)).tobytes())
    for index in (3, 4, 5, 6):  # nbytes, region_id, offset, checksum
        digest.update(array("Q", map(field(index), entries)).tobytes())
    digest.update(array("Q", map(int, map(field(7), entries))).tobytes())  # is_parameter
    return digest.hexdigest()
