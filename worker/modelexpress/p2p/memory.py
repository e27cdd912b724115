"""Tensor memory laid out for NIXL: few large regions, tensors as (region, offset) inside them.

NIXL registration and READ descriptors are per *region* (allocation), never per tensor: registering
4096 tensors one by one cost 0.25 s on an H100 against 0.4 ms for one pooled allocation, and 4096
descriptors reached 2 % of the copy rate against 93 % for one (`shared/GPU.md`).
- `TensorPool` allocates one buffer for many tensors (targets receive into it; a loaded model is
  put into it), aligned so every view is valid for its dtype;
- `adopt_tensors` describes tensors that already live somewhere (an engine's parameters) by the
  storage that backs them, so each underlying allocation is registered once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

import numpy
import torch

from modelexpress.p2p.dtypes import dtype_name, torch_dtype

ALIGNMENT = 256
ROW_ALIGNMENT = 4096
"""Tensors of 4 KiB or more start on a 4 KiB boundary of their pool: their `row-sum-64` rows are then
rows of the pool, which lets a target checksum many tensors in one reduction (`rowsums`)."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor; enough to allocate room for it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    is_parameter: bool = True

    @functools.cached_property
    def nbytes(self) -> int:  # read per tensor in every pass over a layout: computed once
        return math.prod(self.shape) * torch_dtype(self.dtype).itemsize

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor, is_parameter: bool = True) -> TensorSpec:
        return cls(name, dtype_name(tensor.dtype), tuple(tensor.shape), is_parameter)


@dataclass(frozen=True)
class Region:
    """One registered allocation."""

    id: int
    kind: str  # "DRAM" or "VRAM"
    device_id: int
    address: int
    length: int


@dataclass(frozen=True)
class Placement:
    """Where one tensor's bytes are: a region and an offset in it."""

    spec: TensorSpec
    region_id: int
    offset: int


class LayoutColumns(NamedTuple):
    """A layout's tensors as columns, in layout order (numeric ones in numpy)."""

    names: list[str]
    dtypes: list[str]
    shapes: list[tuple[int, ...]]
    region_ids: numpy.ndarray  # int64
    offsets: numpy.ndarray  # int64
    nbytes: numpy.ndarray  # int64


@dataclass
class TensorLayout:
    """Regions, the tensors placed in them, and the views to use them; keeps the memory alive.
    The placements are fixed once the layout is made."""

    regions: list[Region]
    placements: list[Placement]
    tensors: dict[str, torch.Tensor]
    _keepalive: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(p.spec.nbytes for p in self.placements)

    @property
    def in_gpu_memory(self) -> bool:
        """Does any region live in GPU memory?"""
        return any(r.kind == "VRAM" for r in self.regions)

    @functools.cached_property
    def columns(self) -> LayoutColumns:
        """The placements as columns, made once: a pull reads them in several passes (match, stream,
        checksums), and a model of 100k tensors would pay a Python step per tensor in each."""
        placements = self.placements
        count = len(placements)
        specs = list(map(attrgetter("spec"), placements))
        return LayoutColumns(
            list(map(attrgetter("name"), specs)),
            list(map(attrgetter("dtype"), specs)),
            list(map(attrgetter("shape"), specs)),
            numpy.fromiter(map(attrgetter("region_id"), placements), dtype=numpy.int64, count=count),
            numpy.fromiter(map(attrgetter("offset"), placements), dtype=numpy.int64, count=count),
            numpy.fromiter(map(attrgetter("nbytes"), specs), dtype=numpy.int64, count=count),
        )

    def region(self, region_id: int) -> Region:
        return self.regions[region_id]

    def buffers(self) -> list[torch.Tensor]:
        """The backing uint8 buffers, one per region (what gets registered with NIXL)."""
        return list(self._keepalive)


def _memory_kind(device: torch.device) -> tuple[str, int]:
    if device.type == "cuda":
        return "VRAM", device.index if device.index is not None else torch.cuda.current_device()
    if device.type == "cpu":
        return "DRAM", 0
    raise ValueError(f"device {device} is neither host memory nor a CUDA GPU")


def _align(value: int, nbytes: int = 0) -> int:
    alignment = ROW_ALIGNMENT if nbytes >= ROW_ALIGNMENT else ALIGNMENT
    return (value + alignment - 1) // alignment * alignment


def allocate_pool(specs: Sequence[TensorSpec], device: torch.device | str = "cpu", region_id: int = 0) -> TensorLayout:
    """One allocation holding every tensor of `specs` back to back (in order, aligned); tensors view it."""
    device = torch.device(device)
    kind, device_id = _memory_kind(device)
    offsets = []
    cursor = 0
    for spec in specs:
        cursor = _align(cursor, spec.nbytes)
        offsets.append(cursor)
        cursor += spec.nbytes
    # whole 64-bit words to the end, so a checksum can read the word holding the last trailing bytes
    buffer = torch.empty(max(-(-cursor // 8) * 8, 8), dtype=torch.uint8, device=device)
    region = Region(region_id, kind, device_id, buffer.data_ptr(), buffer.numel())
    tensors: dict[str, torch.Tensor] = {}
    placements = []
    for spec, offset in zip(specs, offsets, strict=True):
        raw = buffer[offset : offset + spec.nbytes]
        tensors[spec.name] = raw.view(torch_dtype(spec.dtype)).view(spec.shape)
        placements.append(Placement(spec, region_id, offset))
    return TensorLayout([region], placements, tensors, [buffer])


def adopt_tensors(named: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> TensorLayout:
    """Describe existing tensors by the storages that back them: one region per distinct allocation.

    Non-contiguous tensors cannot be read as one byte range; they are copied into a side pool.
    """
    items = list(named.items()) if isinstance(named, Mapping) else list(named)
    regions: dict[tuple[str, int], Region] = {}
    keepalive: list[torch.Tensor] = []
    placements: list[Placement] = []
    tensors: dict[str, torch.Tensor] = {}
    strays: list[tuple[str, torch.Tensor]] = []
    for name, tensor in items:
        if not tensor.is_contiguous():
            strays.append((name, tensor))
            continue
        storage = tensor.untyped_storage()
        base = storage.data_ptr()
        kind, device_id = _memory_kind(tensor.device)
        key = (f"{kind}:{device_id}", base)
        if key not in regions:
            regions[key] = Region(len(regions), kind, device_id, base, storage.nbytes())
            keepalive.append(torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage))
        offset = tensor.data_ptr() - base
        placements.append(Placement(TensorSpec.of(name, tensor), regions[key].id, offset))
        tensors[name] = tensor
    if strays:
        side = allocate_pool([TensorSpec.of(n, t) for n, t in strays], strays[0][1].device, region_id=len(regions))
        for name, tensor in strays:
            side.tensors[name].copy_(tensor)
        regions[("side", -1)] = side.regions[0]
        placements.extend(side.placements)
        tensors.update(side.tensors)
        keepalive.extend(side.buffers())
    order = {name: i for i, (name, _) in enumerate(items)}
    placements.sort(key=lambda p: order[p.spec.name])
    return TensorLayout(sorted(regions.values(), key=lambda r: r.id), placements, tensors, keepalive)
