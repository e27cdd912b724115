"""The tensor manifest of one worker rank, and its compact paged encoding for gRPC.

A manifest lists every tensor a worker serves (parameters and non-parameters such as FP8 scales)
with dtype, shape, byte size, region and offset, and checksum, under the worker's identity. It is
built for 100k+ tensors: sent as a header then pages, names front-coded within a page (consecutive
names share long prefixes such as `model.layers.17.mlp.`), shapes packed. It is held as columns
(numeric ones in numpy): a target decodes, checks, matches and maps a source's manifest without a
Python object per tensor; `Manifest.tensors` gives one entry per tensor to those that want them.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy
import xxhash

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.bulk import without_gc
from modelexpress.p2p.checksum.algorithms import ROW_SUM_64, XXH3_64
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
    """One served tensor. A named tuple, not a frozen dataclass: a tuple is built five times faster."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    region_id: int
    offset: int
    checksum: int
    is_parameter: bool = True


class TensorColumns(NamedTuple):
    """A manifest's tensors as columns: row i of every column is tensor i (numeric ones in numpy)."""

    names: list[str]
    dtypes: list[str]
    shapes: list[tuple[int, ...]]
    ranks: numpy.ndarray  # int64, the shapes as on the wire: each one's rank, and all their dims in a row
    dims: numpy.ndarray  # int64
    nbytes: numpy.ndarray  # int64
    region_ids: numpy.ndarray  # int64
    offsets: numpy.ndarray  # int64
    checksums: numpy.ndarray  # uint64
    parameters: numpy.ndarray  # bool

    @classmethod
    def concatenate(cls, parts: Sequence[TensorColumns]) -> TensorColumns:
        if len(parts) == 1:
            return parts[0]
        lists = [list(itertools.chain.from_iterable(column)) for column in list(zip(*parts, strict=True))[:3]]
        arrays = [numpy.concatenate(column) for column in list(zip(*parts, strict=True))[3:]]
        return cls(*lists, *arrays)  # type: ignore[arg-type]

    @classmethod
    def empty(cls) -> TensorColumns:
        i64 = numpy.zeros(0, dtype=numpy.int64)
        return cls([], [], [], i64, i64, i64, i64, i64, numpy.zeros(0, dtype=numpy.uint64), numpy.zeros(0, dtype=bool))


@dataclass(frozen=True, eq=False)
class Manifest:
    identity: WorkerIdentity
    regions: tuple[Region, ...]
    columns: TensorColumns
    version: str
    checksum_algorithm: str

    @property
    def tensor_count(self) -> int:
        return len(self.columns.names)

    @property
    def total_bytes(self) -> int:
        return int(self.columns.nbytes.sum())

    @cached_property
    def tensors(self) -> tuple[TensorEntry, ...]:
        """One entry per tensor, made on first use (a pull works on the columns)."""
        c = self.columns
        rows = zip(
            c.names,
            c.dtypes,
            c.shapes,
            c.nbytes.tolist(),
            c.region_ids.tolist(),
            c.offsets.tolist(),
            c.checksums.tolist(),
            c.parameters.tolist(),
            strict=True,
        )
        return tuple(map(tuple.__new__, itertools.repeat(TensorEntry), rows))

    @cached_property
    def rows(self) -> dict[str, int]:
        """Each tensor's row by name."""
        return {name: row for row, name in enumerate(self.columns.names)}

    @cached_property
    def checksum_of(self) -> dict[str, int]:
        """Each tensor's published checksum by name (what a target checks what it received against)."""
        return dict(zip(self.columns.names, self.columns.checksums.tolist(), strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return (self.identity, self.regions, self.version, self.checksum_algorithm, self.tensors) == (
            other.identity,
            other.regions,
            other.version,
            other.checksum_algorithm,
            other.tensors,
        )

    __hash__ = None  # type: ignore[assignment]

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def build(
        cls, identity: WorkerIdentity, layout: TensorLayout, checksums: dict[str, int], algorithm: str
    ) -> Manifest:
        """The manifest of a layout with each tensor's checksum, computed with `algorithm` by the caller."""
        ours = layout.columns
        count = len(ours.names)
        columns = TensorColumns(
            ours.names,
            ours.dtypes,
            ours.shapes,
            numpy.fromiter(map(len, ours.shapes), dtype=numpy.int64, count=count),
            numpy.fromiter(itertools.chain.from_iterable(ours.shapes), dtype=numpy.int64),
            ours.nbytes.copy(),  # the manifest owns its columns: the layout keeps its own
            ours.region_ids.copy(),
            ours.offsets.copy(),
            numpy.fromiter(map(checksums.__getitem__, ours.names), dtype=numpy.uint64, count=count),
            numpy.fromiter(map(operator.attrgetter("spec.is_parameter"), layout.placements), dtype=bool, count=count),
        )
        return cls(identity, tuple(layout.regions), columns, _version(columns), algorithm)

    # --- wire encoding --------------------------------------------------------------------------

    def to_chunks(self, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[worker_pb2.ManifestChunk]:
        page_size = page_size or DEFAULT_PAGE_SIZE
        yield worker_pb2.ManifestChunk(
            header=worker_pb2.ManifestHeader(
                identity=self.identity.to_proto(),
                tensor_count=self.tensor_count,
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
        for first in range(0, self.tensor_count, page_size):
            yield worker_pb2.ManifestChunk(page=_encode_page(self.columns, first, first + page_size))

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
        pages: list[TensorColumns] = []
        count = 0
        for chunk in iterator:
            if chunk.WhichOneof("part") != "page":
                raise ManifestError("a second header in the manifest stream")
            if chunk.page.first_index != count:
                raise ManifestError(f"manifest page starts at {chunk.page.first_index}, expected {count}")
            pages.append(_decode_page(chunk.page, count))
            count += len(pages[-1].names)
        if count != header.tensor_count:
            raise ManifestError(f"manifest announced {header.tensor_count} tensors, got {count}")
        columns = TensorColumns.concatenate(pages) if pages else TensorColumns.empty()
        regions = tuple(Region(r.id, _WIRE_TO_KIND[r.kind], r.device_id, r.address, r.length) for r in header.regions)
        if _version(columns) != header.manifest_version:
            raise ManifestError("manifest version does not match its contents (changed while it was sent?)")
        return cls(WorkerIdentity.from_proto(header.identity), regions, columns, header.manifest_version, algorithm)


def _encode_page(columns: TensorColumns, low: int, high: int) -> worker_pb2.TensorPage:
    names, shared = [], []
    previous = ""
    for name in columns.names[low:high]:
        common = _common_prefix(previous, name)
        names.append(name[common:])
        shared.append(common)
        previous = name
    shapes = columns.shapes[low:high]
    return worker_pb2.TensorPage(
        first_index=low,
        name_suffixes=names,
        shared_prefix_lengths=shared,
        dtypes=list(map(NAME_TO_WIRE.__getitem__, columns.dtypes[low:high])),  # type: ignore[arg-type]
        ranks=columns.ranks[low:high].tolist(),
        dims=list(itertools.chain.from_iterable(shapes)),
        nbytes=columns.nbytes[low:high].tolist(),
        region_ids=columns.region_ids[low:high].tolist(),
        offsets=columns.offsets[low:high].tolist(),
        checksums=columns.checksums[low:high].tolist(),
        non_parameters=numpy.flatnonzero(~columns.parameters[low:high]).tolist(),
    )


def _decode_page(page: worker_pb2.TensorPage, first: int) -> TensorColumns:
    """The columns of one page. Per-tensor work is left to C (numpy, map, zip) where it can be: a target
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
        dtypes = list(map(WIRE_TO_NAME.__getitem__, page.dtypes))
    except KeyError as exc:
        raise ManifestError(f"manifest page at tensor {first}: unknown dtype {exc}") from None
    rank_column = numpy.array(page.ranks, dtype=numpy.int64)
    dim_column = numpy.array(page.dims, dtype=numpy.int64)
    ranks, dims = rank_column.tolist(), dim_column.tolist()
    if sum(ranks) != len(dims):
        raise ManifestError(f"manifest page at tensor {first}: shapes need {sum(ranks)} dims, got {len(dims)}")
    shapes: list[tuple[int, ...]]
    if ranks and min(ranks) == max(ranks) > 0:  # one rank for the whole page (the usual case): tuples by zip
        shapes = list(zip(*[iter(dims)] * ranks[0], strict=True))
    else:
        ends = list(itertools.accumulate(ranks))
        shapes = [tuple(dims[end - rank : end]) for rank, end in zip(ranks, ends, strict=True)]
    non_parameters = numpy.array(page.non_parameters, dtype=numpy.int64)
    if len(non_parameters) and (non_parameters.max() >= count or non_parameters.min() < 0):
        index = int(non_parameters[(non_parameters >= count) | (non_parameters < 0)][0])
        raise ManifestError(f"manifest page at tensor {first}: non-parameter index {index} out of range")
    parameters = numpy.ones(count, dtype=bool)
    parameters[non_parameters] = False
    return TensorColumns(
        names,
        dtypes,
        shapes,
        rank_column,
        dim_column,
        numpy.array(page.nbytes, dtype=numpy.int64),
        numpy.array(page.region_ids, dtype=numpy.int64),
        numpy.array(page.offsets, dtype=numpy.int64),
        numpy.array(page.checksums, dtype=numpy.uint64),
        parameters,
    )


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _version(columns: TensorColumns) -> str:
    """A digest of every field of every tensor: names, dtypes, then each numeric column packed as
    native 64-bit words ((rank, *dims) per shape). The definition is fixed: sources and targets of
    different releases compare it."""
    digest = xxhash.xxh3_64("\n".join(columns.names).encode())
    digest.update(" ".join(columns.dtypes).encode())
    digest.update(_ranked_dims(columns.ranks, columns.dims).tobytes())
    for column in (columns.nbytes, columns.region_ids, columns.offsets, columns.checksums, columns.parameters):
        digest.update(column.astype(numpy.uint64).tobytes())
    return digest.hexdigest()


def _ranked_dims(ranks: numpy.ndarray, dims: numpy.ndarray) -> numpy.ndarray:
    """(rank, *dims) of every shape in a row: each rank word goes before its shape's dims."""
    words = numpy.empty(len(ranks) + len(dims), dtype=numpy.uint64)
    at = numpy.arange(len(ranks)) + numpy.cumsum(ranks) - ranks  # tensor i's rank follows i ranks and their dims
    words[at] = ranks
    others = numpy.ones(len(words), dtype=bool)
    others[at] = False
    words[others] = dims
    return words
