"""Manifests (paged, front-coded encoding at 100k tensors), pooled layouts, chunking and descriptor coalescing."""

from __future__ import annotations

import itertools
import time
from array import array

import pytest
import torch
import xxhash

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest, ManifestError
from modelexpress.p2p.memory import (
    ALIGNMENT,
    ROW_ALIGNMENT,
    Region,
    TensorLayout,
    TensorSpec,
    adopt_tensors,
    allocate_pool,
)
from modelexpress.p2p.plan import Descriptor, SourceMap, TensorMismatchError, match
from modelexpress.p2p.stream import (
    DEFAULT_CHUNK_BYTES,
    TAIL_BYTES,
    VRAM_TAIL_BYTES,
    Chunk,
    Piece,
    default_chunk_bytes,
    default_tail_bytes,
    make_chunks,
)
from tests.helpers.manifests import build_manifest, entries_by_name

IDENTITY = WorkerIdentity(model_name="org/model", tensor_parallel_size=2, rank=1)


def _specs(n: int, numel: int = 8) -> list[TensorSpec]:
    return [TensorSpec(f"model.layers.{i // 10}.mlp.experts.{i % 10}.weight", "bfloat16", (numel,)) for i in range(n)]


def test_pool_views_are_aligned_and_disjoint() -> None:
    specs = [
        TensorSpec("a", "float32", (3,)),
        TensorSpec("b", "bfloat16", (5, 7)),
        TensorSpec("c", "float8_e4m3fn", (0,)),
    ]
    layout = allocate_pool(specs)
    region = layout.regions[0]
    offsets = [p.offset for p in layout.placements]
    assert all(o % ALIGNMENT == 0 for o in offsets)
    assert layout.tensors["b"].shape == (5, 7) and layout.tensors["b"].dtype == torch.bfloat16
    assert layout.tensors["a"].data_ptr() == region.address + offsets[0]
    assert layout.tensors["c"].numel() == 0


def test_adopt_registers_each_allocation_once() -> None:
    big = torch.zeros(1000)
    named = {"x": big[:100], "y": big[100:300], "z": torch.ones(4), "t": torch.randn(4, 6).t()}
    layout = adopt_tensors(named)
    # big's storage, z's storage, and a side pool for the non-contiguous view
    assert len(layout.regions) == 3
    by_name = {p.spec.name: p for p in layout.placements}
    assert by_name["x"].region_id == by_name["y"].region_id
    assert by_name["y"].offset == 100 * 4
    assert torch.equal(layout.tensors["t"], named["t"])


def test_manifest_of_100k_tensors_round_trips_compactly() -> None:
    specs = _specs(100_000)
    layout = allocate_pool(specs)
    manifest = build_manifest(IDENTITY, layout, checksums={s.name: i for i, s in enumerate(specs)})
    started = time.perf_counter()
    chunks = list(manifest.to_chunks(page_size=4096))
    back = Manifest.from_chunks(chunks)
    elapsed = time.perf_counter() - started
    assert back == manifest
    wire = sum(c.ByteSize() for c in chunks)
    raw_names = sum(len(s.name) for s in specs)
    shared = sum(sum(c.page.shared_prefix_lengths) for c in chunks[1:])
    assert shared > 0.6 * raw_names, "front coding should drop most of the repeated name prefixes"
    assert wire / len(specs) < 32, f"{wire / len(specs):.1f} bytes per tensor on the wire"
    assert len(chunks) == 1 + 25
    assert elapsed < 5, elapsed


def test_manifest_stream_errors_are_caught() -> None:
    layout = allocate_pool(_specs(10))
    chunks = list(build_manifest(IDENTITY, layout).to_chunks(page_size=4))
    with pytest.raises(ManifestError, match="start with a header"):
        Manifest.from_chunks(chunks[1:])
    with pytest.raises(ManifestError, match="expected"):
        Manifest.from_chunks([chunks[0], chunks[2]])
    chunks[1].page.checksums[0] ^= 1
    with pytest.raises(ManifestError, match="version does not match"):
        Manifest.from_chunks(chunks)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda page: page.nbytes.pop(), "columns have different lengths"),
        (lambda page: page.dims.append(3), "shapes need 4 dims, got 5"),
        (lambda page: page.non_parameters.append(9), "non-parameter index 9 out of range"),
        (lambda page: page.shared_prefix_lengths.__setitem__(1, 500), "tensor 1: prefix longer than the previous name"),
        (lambda page: page.shared_prefix_lengths.__setitem__(0, 1), "tensor 0: prefix longer than the previous name"),
        (lambda page: page.ranks.__setitem__(0, 0), "shapes need 3 dims, got 4"),
        (lambda page: page.dtypes.__setitem__(2, 99), "unknown dtype 99"),
    ],
)
def test_malformed_manifest_pages_are_named(damage: object, message: str) -> None:
    specs = [TensorSpec(f"w{i}", "bfloat16", (3,)) for i in range(4)]
    specs.append(TensorSpec("scale", "float32", (1,), is_parameter=False))
    manifest = build_manifest(IDENTITY, allocate_pool(specs))
    chunks = list(manifest.to_chunks(page_size=4))
    back = Manifest.from_chunks(chunks)
    assert (
        back == manifest
        and not entries_by_name(back)["scale"].is_parameter
        and entries_by_name(back)["w0"].is_parameter
    )
    damage(chunks[1].page)  # type: ignore[operator]
    with pytest.raises(ManifestError, match=message):
        Manifest.from_chunks(chunks)


def test_manifest_carries_its_checksum_algorithm() -> None:
    layout = allocate_pool(_specs(5))
    assert build_manifest(IDENTITY, layout).checksum_algorithm == "xxh3-64"  # host memory
    manifest = build_manifest(IDENTITY, layout, algorithm="row-sum-64")
    chunks = list(manifest.to_chunks())
    assert Manifest.from_chunks(chunks).checksum_algorithm == "row-sum-64"
    chunks[0].header.checksum_algorithm = 3  # known to the protocol, not to this worker
    with pytest.raises(ManifestError, match=r"unsupported checksum algorithm 3 .*xxh3-64, row-sum-64"):
        Manifest.from_chunks(chunks)


def test_identity_differences_are_listed() -> None:
    other = IDENTITY.model_copy(update={"rank": 0, "dtype": "bfloat16"})
    assert IDENTITY.differences(other) == ["dtype: 'auto' != 'bfloat16'", "rank: 1 != 0"]
    assert WorkerIdentity.from_proto(IDENTITY.to_proto()) == IDENTITY


def test_match_takes_the_source_order_or_any_other_and_ignores_tensors_only_the_source_has() -> None:
    specs = _specs(30)
    same = build_manifest(IDENTITY, allocate_pool(specs), checksums={s.name: i for i, s in enumerate(specs)})
    shuffled = build_manifest(IDENTITY, allocate_pool(specs[::-1]), checksums={s.name: i for i, s in enumerate(specs)})
    more = [*specs, TensorSpec("lm_head.bias", "bfloat16", (4,))]
    larger = build_manifest(IDENTITY, allocate_pool(more), checksums={s.name: i for i, s in enumerate(more)})
    local = allocate_pool(specs)
    for manifest in (same, shuffled, larger):
        rows = match(local, manifest)  # each of ours, in our order: its row at the source
        assert [manifest.tensors[row].name for row in rows.tolist()] == [s.name for s in specs]
        assert all(
            manifest.tensors[row] == entries_by_name(manifest)[s.name]
            for row, s in zip(rows.tolist(), specs, strict=True)
        )
    with pytest.raises(
        TensorMismatchError, match=r"1 tensor\(s\) do not match.*local float16\[8\] != source bfloat16\[8\]"
    ):
        match(allocate_pool([*specs[:5], TensorSpec(specs[5].name, "float16", (8,)), *specs[6:]]), same)


def test_match_lists_first_differences() -> None:
    source = build_manifest(IDENTITY, allocate_pool(_specs(30)))
    local_specs = _specs(30)
    local_specs[3] = TensorSpec(local_specs[3].name, "float16", local_specs[3].shape)
    local_specs.append(TensorSpec("extra.weight", "bfloat16", (2,)))
    with pytest.raises(TensorMismatchError) as info:
        match(allocate_pool(local_specs), source)
    text = str(info.value)
    assert "2 tensor(s) do not match" in text
    assert "local float16[8] != source bfloat16[8]" in text
    assert "extra.weight: not served by the source" in text


def test_pages_of_one_rank_and_of_mixed_ranks_decode_alike_and_match() -> None:
    """Pages whose shapes all have one rank take a faster path than pages of mixed ranks (scalars
    included): both give back the manifest, and a shape that differs is found among names that all match."""
    shapes = [(4, 2), (3, 5), (6, 1), (2, 2), (), (7,), (1, 2, 3, 4), (5,), (2, 3)]
    specs = [TensorSpec(f"model.layers.{i}.weight", "float32", shape) for i, shape in enumerate(shapes)]
    layout = allocate_pool(specs)
    manifest = build_manifest(IDENTITY, layout)
    for page_size in (4, 3, 1):  # [rank 2 x4], then mixed pages; one tensor per page
        back = Manifest.from_chunks(list(manifest.to_chunks(page_size=page_size)))
        assert back == manifest and [e.shape for e in back.tensors] == shapes
    assert match(layout, manifest).tolist() == list(range(len(specs)))
    changed = [*specs[:4], TensorSpec(specs[4].name, "float32", (1,)), *specs[5:]]
    with pytest.raises(
        TensorMismatchError,
        match=r"1 tensor\(s\) do not match.*layers\.4\.weight: local float32\[1\] != source float32\[\]",
    ):
        match(allocate_pool(changed), manifest)


def _version_entry_by_entry(manifest: Manifest) -> str:
    """The manifest version as its first release computed it, one entry at a time: sources and targets
    of different releases must agree on it."""
    digest = xxhash.xxh3_64("\n".join(e.name for e in manifest.tensors).encode())
    digest.update(" ".join(e.dtype for e in manifest.tensors).encode())
    digest.update(array("Q", [v for e in manifest.tensors for v in (len(e.shape), *e.shape)]).tobytes())
    for index in (3, 4, 5, 6):
        digest.update(array("Q", [e[index] for e in manifest.tensors]).tobytes())
    digest.update(array("Q", [int(e.is_parameter) for e in manifest.tensors]).tobytes())
    return digest.hexdigest()


def test_manifest_version_is_the_entry_by_entry_digest_when_built_and_when_received() -> None:
    shapes = [(4, 2), (), (7,), (1, 2, 3, 4), (5,), (2, 3)]
    specs = [
        TensorSpec(f"model.layers.{i}.weight", dtype, shape, is_parameter=i != 2)
        for i, (dtype, shape) in enumerate(
            zip(["float32", "bfloat16", "uint8", "int64", "float16", "bool"], shapes, strict=True)
        )
    ]
    layout = allocate_pool(specs)
    checksums = {s.name: (2**64 - 1 - i if i % 2 else i) for i, s in enumerate(specs)}  # top bit set too
    manifest = build_manifest(IDENTITY, layout, checksums=checksums)
    assert manifest.version == _version_entry_by_entry(manifest)
    for page_size in (4, 1):
        assert Manifest.from_chunks(list(manifest.to_chunks(page_size=page_size))).version == manifest.version
    empty = build_manifest(IDENTITY, allocate_pool([]), checksums={})
    assert empty.version == _version_entry_by_entry(empty)
    assert Manifest.from_chunks(list(empty.to_chunks())) == empty


def test_small_pooled_tensors_coalesce_into_one_descriptor() -> None:
    specs = _specs(4096, numel=50)  # 100 bytes each, padded to 256 (under 4 KiB)
    local, remote = allocate_pool(specs), allocate_pool(specs)
    manifest = build_manifest(IDENTITY, remote, checksums={s.name: 0 for s in specs})
    chunks = make_chunks(local, chunk_bytes=64 << 20)
    assert len(chunks) == 1
    runs = SourceMap(local, manifest, match(local, manifest)).descriptors(chunks[0])
    assert len(runs) == 1
    assert runs[0].length == local.placements[-1].offset + 100


def test_pooled_tensors_on_4k_boundaries_coalesce_across_their_padding() -> None:
    specs = [TensorSpec(f"experts.{i}.weight", "bfloat16", (5368,)) for i in range(2000)]  # 10736 bytes each
    local, remote = allocate_pool(specs), allocate_pool(specs)
    assert local.placements[1].offset == 12288  # 1552 bytes of padding after each tensor
    manifest = build_manifest(IDENTITY, remote, checksums={s.name: 0 for s in specs})
    source = SourceMap(local, manifest, match(local, manifest))
    chunks = make_chunks(local, chunk_bytes=8 << 20)
    assert [len(source.descriptors(c)) for c in chunks] == [1] * len(chunks)


def test_different_layouts_split_descriptors_and_chunks_split_big_tensors() -> None:
    specs = [TensorSpec("a", "uint8", (1000,)), TensorSpec("b", "uint8", (3000,))]
    local = allocate_pool(specs)
    remote = allocate_pool(list(reversed(specs)))  # the source holds them in the other order
    manifest = build_manifest(IDENTITY, remote, checksums={"a": 0, "b": 0})
    chunks = make_chunks(local, chunk_bytes=1024)
    assert [c.nbytes for c in chunks] == [1024, 1024, 1024, 928]
    assert [[p.name for p in c.pieces] for c in chunks] == [["a", "b"], ["b"], ["b"], ["b"]]
    runs = SourceMap(local, manifest, match(local, manifest)).descriptors(chunks[0])
    assert [r.length for r in runs] == [1000, 24]  # not contiguous on the source: two runs


def _piece_by_piece(chunk: Chunk, local: TensorLayout, manifest: Manifest) -> list[Descriptor]:
    """The reference: each piece's addresses, merged with the run before it when both sides continue at
    the same distance (< ROW_ALIGNMENT of padding) in the same regions."""
    placements = {p.spec.name: p for p in local.placements}
    entries = entries_by_name(manifest)
    local_bases = {r.id: r.address for r in local.regions}
    remote_bases = {r.id: r.address for r in manifest.regions}
    runs: list[list[int]] = []
    for piece in chunk.pieces:
        mine, theirs = placements[piece.name], entries[piece.name]
        here = local_bases[mine.region_id] + mine.offset + piece.start
        there = remote_bases[theirs.region_id] + theirs.offset + piece.start
        if runs:
            lo, ro, length, lr, rr = runs[-1]
            gap = here - (lo + length)
            if (
                (lr, rr) == (mine.region_id, theirs.region_id)
                and gap == there - (ro + length)
                and 0 <= gap < ROW_ALIGNMENT
            ):
                runs[-1][2] += gap + piece.length
                continue
        runs.append([here, there, piece.length, mine.region_id, theirs.region_id])
    return [Descriptor(r[0], r[1], r[2]) for r in runs if r[2]]


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 5000, 1024, 100])
def test_source_map_descriptors_equal_the_piece_by_piece_merge(chunk_bytes: int) -> None:
    sizes = [100, 4096, 0, 7, 8192, 300, 1, 0, 5000, 256, 12288, 33]
    specs = [TensorSpec(f"t{i}", "uint8", (n,)) for i, n in enumerate(sizes)]
    local = allocate_pool(specs)
    layouts = {
        "same pool": allocate_pool(specs),
        "reversed": allocate_pool(list(reversed(specs))),
        "shuffled in two pools": _two_pools([specs[i] for i in (3, 0, 1, 2, 9, 10, 11, 4, 5, 6, 7, 8)]),
        "one allocation each": adopt_tensors({s.name: torch.zeros(s.shape, dtype=torch.uint8) for s in specs}),
    }
    for label, remote in layouts.items():
        manifest = build_manifest(IDENTITY, remote, checksums={s.name: 0 for s in specs})
        source = SourceMap(local, manifest, match(local, manifest))
        for chunk in make_chunks(local, chunk_bytes):
            assert source.descriptors(chunk) == _piece_by_piece(chunk, local, manifest), (label, chunk)
    # the local side listing its tensors out of stream order
    pool = allocate_pool(specs)
    shuffled = TensorLayout(
        pool.regions, [pool.placements[i] for i in (5, 0, 11, 2, 9, 1, 3, 10, 4, 6, 8, 7)], pool.tensors, pool.buffers()
    )
    manifest = build_manifest(IDENTITY, layouts["reversed"], checksums={s.name: 0 for s in specs})
    source = SourceMap(shuffled, manifest, match(shuffled, manifest))
    for chunk in make_chunks(shuffled, chunk_bytes):
        assert source.descriptors(chunk) == _piece_by_piece(chunk, shuffled, manifest), chunk
    # the local side in many regions too (the source in one pool)
    scattered = adopt_tensors({s.name: torch.zeros(s.shape, dtype=torch.uint8) for s in specs})
    manifest = build_manifest(IDENTITY, layouts["same pool"], checksums={s.name: 0 for s in specs})
    source = SourceMap(scattered, manifest, match(scattered, manifest))
    for chunk in make_chunks(scattered, chunk_bytes):
        assert source.descriptors(chunk) == _piece_by_piece(chunk, scattered, manifest), chunk
    # a repair chunk: one piece of one tensor
    repair = Chunk.of(99, (make_chunks(scattered, 1000)[5].pieces[0],))
    assert source.descriptors(repair) == _piece_by_piece(repair, scattered, manifest)


def test_a_source_tensor_in_a_region_its_manifest_does_not_describe_is_refused_by_name() -> None:
    specs = _specs(3)
    local = allocate_pool(specs)
    manifest = build_manifest(IDENTITY, allocate_pool(specs), checksums={s.name: 0 for s in specs})
    manifest.columns.region_ids[1] = 7
    with pytest.raises(
        TensorMismatchError, match=rf"{specs[1].name}: in the source's region 7, which is not described"
    ):
        SourceMap(local, manifest, match(local, manifest))


def _two_pools(specs: list[TensorSpec]) -> TensorLayout:
    first, second = allocate_pool(specs[:5]), allocate_pool(specs[5:], region_id=1)
    return TensorLayout(
        [*first.regions, *second.regions],
        [*first.placements, *second.placements],
        {**first.tensors, **second.tensors},
        [*first.buffers(), *second.buffers()],
    )


def _chunks_piece_by_piece(layout: TensorLayout, chunk_bytes: int, tail_bytes: int = TAIL_BYTES) -> list[Chunk]:
    """The reference: walk the tensors in stream order, cutting pieces off each until the chunk's
    target (at most half of what is left, down to `tail_bytes`) is reached."""

    def target(left: int) -> int:
        return max(1, min(chunk_bytes, max(min(chunk_bytes, tail_bytes), left // 2)))

    remaining = sum(p.spec.nbytes for p in layout.placements)
    chunks: list[Chunk] = []
    current: list[Piece] = []
    size, goal = 0, target(remaining)
    for placement in sorted(layout.placements, key=lambda p: (p.region_id, p.offset)):
        start = 0
        while start < placement.spec.nbytes:
            take = min(placement.spec.nbytes - start, goal - size)
            current.append(Piece(placement.spec.name, start, take))
            size, start = size + take, start + take
            if size == goal:
                chunks.append(Chunk.of(len(chunks), tuple(current)))
                remaining -= size
                current, size, goal = [], 0, target(remaining)
    if current:
        chunks.append(Chunk.of(len(chunks), tuple(current)))
    return chunks


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 1 << 20, 8192, 5000, 1000, 300])
def test_chunks_equal_the_piece_by_piece_walk(chunk_bytes: int) -> None:
    sizes = [100, 4096, 0, 7, 8192, 300, 1, 0, 5000, 256, 12288, 33, 3 << 20, 0]
    layouts = [
        allocate_pool([TensorSpec(f"t{i}", "uint8", (n,)) for i, n in enumerate(sizes)]),
        adopt_tensors({f"t{i}": torch.zeros(n, dtype=torch.uint8) for i, n in enumerate(sizes)}),
        allocate_pool([TensorSpec("empty", "uint8", (0,))]),
        allocate_pool([TensorSpec(f"e{i}", "uint8", (1000,)) for i in range(3000)]),  # chunk edges on tensor edges
    ]
    for layout in layouts:
        chunks = make_chunks(layout, chunk_bytes)
        assert chunks == _chunks_piece_by_piece(layout, chunk_bytes)
        assert all(type(p) is Piece for c in chunks for p in c.pieces)
        for tail_bytes in (chunk_bytes // 4, 4096):  # a floor of its own, as into GPU memory
            tapered = make_chunks(layout, chunk_bytes, tail_bytes=tail_bytes)
            assert tapered == _chunks_piece_by_piece(layout, chunk_bytes, tail_bytes)


def test_chunks_taper_at_the_end_and_cover_every_byte_once() -> None:
    layout = allocate_pool([TensorSpec(f"w{i}", "bfloat16", (3 << 20,)) for i in range(10)])  # 10 x 6 MiB
    chunks = make_chunks(layout, chunk_bytes=8 << 20)
    sizes = [c.nbytes for c in chunks]
    assert sizes[0] == 8 << 20 and sizes[-1] <= TAIL_BYTES
    tail = sizes[sizes.index(max(s for s in sizes if s < 8 << 20)) :]
    assert tail == sorted(tail, reverse=True), "the chunks after the full-size ones shrink"
    assert len(chunks) < 60 // 8 + 10, "tapering adds a handful of READs, not one per MiB"
    covered: dict[str, list[tuple[int, int]]] = {}
    for chunk in chunks:
        for piece in chunk.pieces:
            covered.setdefault(piece.name, []).append((piece.start, piece.length))
    for placement in layout.placements:
        runs = sorted(covered[placement.spec.name])
        assert runs[0][0] == 0 and all(a + n == b for (a, n), (b, _) in itertools.pairwise(runs))
        assert runs[-1][0] + runs[-1][1] == placement.spec.nbytes


def test_default_chunk_size_follows_the_memory_kind() -> None:
    assert default_chunk_bytes(allocate_pool(_specs(4))) == DEFAULT_CHUNK_BYTES == 64 << 20
    gpu = TensorLayout([Region(0, "DRAM", 0, 0, 0), Region(1, "VRAM", 0, 0, 0)], [], {})
    assert default_chunk_bytes(gpu) == 512 << 20
    assert default_tail_bytes(allocate_pool(_specs(4))) == TAIL_BYTES == 1 << 20
    assert default_tail_bytes(gpu) == VRAM_TAIL_BYTES == 128 << 20


def test_a_tail_floor_stops_the_taper_there() -> None:
    """A 1 GiB pull in 512 MiB READs tapers 256, 128, 128 into GPU memory (floor 128 MiB), not on to
    1 MiB: a handful of READs, each with its verification job, fewer (scaled down 1024 times here)."""
    layout = allocate_pool([TensorSpec(f"w{i}", "uint8", (64 << 10,)) for i in range(16)])  # 1 MiB
    sizes = [c.nbytes for c in make_chunks(layout, 512 << 10, tail_bytes=128 << 10)]
    assert sizes == [512 << 10, 256 << 10, 128 << 10, 128 << 10]
    assert len(make_chunks(layout, 512 << 10, tail_bytes=1 << 10)) > len(sizes) + 4
