"""`row-sum-64` of many tensors at once: segmented reductions over a pool, one host sync per batch.

The per-tensor reference (`checksum.row_sum64`) launches several kernels per tensor and waits for
the device with `.item()`: 4096 small tensors cost 4096 waits. Here the same values come from a
fixed number of kernels per batch and one wait:

- `allocate_pool` puts every tensor of 4 KiB or more on a 4 KiB boundary, so its rows (512 words
  from its start, weighted `2 * row + 1`) are rows of the pool. As bytes land (`add_pieces`, any
  order, a tensor spanning many READs), one reduction sums the pool's rows under them, and each
  piece's weighted sum comes from two prefix sums over those row sums: with `s` the row sums and
  `f` the tensor's first row, `sum((2 * (r - f) + 1) * s[r]) = 2 * sum(r * s[r]) - (2 * f - 1) *
  sum(s[r])`. Only the pass over the bytes is full size; the rest is 512 times smaller.
- The partial last row of each tensor (and its trailing bytes, zero-padded as the reference pads
  them) is gathered for a whole batch when its verdict is asked for (`totals`): the only host sync.

Tensors off that grid (adopted from an engine's own allocations, or pieces that do not fall on
4 KiB edges) are reduced whole on their device when their total is asked for, still without a wait
of their own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from modelexpress.p2p.checksum import ROW_WORDS, row_sum_digest, row_sum_total
from modelexpress.p2p.memory import ROW_ALIGNMENT, TensorLayout

ROW_BYTES = ROW_WORDS * 8
assert ROW_BYTES == ROW_ALIGNMENT

HOST_SYNCS = [0]
"""How many times a batch's totals were read back to the host (a test counts them)."""


@dataclass(slots=True, eq=False)  # thousands per pull, built on its critical path: no frozen-init cost
class _Span:
    index: int  # position among the accumulator's tensors
    words: torch.Tensor  # int64 words of the tensor's region
    word_offset: int  # where the tensor starts in `words`
    size: int  # bytes
    on_grid: bool  # its rows are rows of `words` (or it has no full row) and its last word is inside `words`
    device: torch.device

    @property
    def full_rows(self) -> int:
        return self.size // ROW_BYTES

    @property
    def first_row(self) -> int:
        return self.word_offset // ROW_WORDS


def _device_index(values: Sequence[int], device: torch.device) -> torch.Tensor:
    host = torch.tensor(values, dtype=torch.int64)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host


class RowSums:
    """Running `row-sum-64` accumulators for the tensors of one layout (each region on its device).

    Not thread-safe: feed it from one thread. On a GPU, work is queued on the caller's current stream.
    """

    def __init__(self, layout: TensorLayout, names: Sequence[str] | None = None) -> None:
        words_of: dict[int, torch.Tensor] = {}
        device_of: dict[int, torch.device] = {}
        bytes_of: dict[int, int] = {}
        for region, buffer in zip(layout.regions, layout.buffers(), strict=False):
            usable = buffer.numel() // 8 * 8
            aligned = buffer.data_ptr() == region.address and buffer.data_ptr() % 8 == 0
            if aligned and buffer.dtype == torch.uint8 and usable:
                words_of[region.id] = buffer[:usable].view(torch.int64)
                device_of[region.id] = buffer.device
                bytes_of[region.id] = usable
        wanted = set(names) if names is not None else None
        empty = torch.empty(0, dtype=torch.int64)
        self.names: list[str] = []
        self._spans: dict[str, _Span] = {}
        for placement in layout.placements:
            name = placement.spec.name
            if wanted is not None and name not in wanted:
                continue
            words = words_of.get(placement.region_id)
            size, offset = placement.spec.nbytes, placement.offset
            on_grid = (
                words is not None
                and offset % 8 == 0
                and (size < ROW_BYTES or offset % ROW_BYTES == 0)
                and offset + -(-size // 8) * 8 <= bytes_of[placement.region_id]
            )
            device = device_of.get(placement.region_id) or layout.tensors[name].device
            span = _Span(len(self.names), words if words is not None else empty, offset // 8, size, on_grid, device)
            self.names.append(name)
            self._spans[name] = span
        self._tensors = layout.tensors
        self._acc: dict[torch.device, torch.Tensor] = {}
        self._off_grid: set[str] = set()  # reduced whole in totals(): a piece was off the row grid

    def size(self, name: str) -> int:
        return self._spans[name].size

    def _accumulator(self, device: torch.device) -> torch.Tensor:
        acc = self._acc.get(device)
        if acc is None:
            acc = self._acc[device] = torch.zeros(len(self.names), dtype=torch.int64, device=device)
        return acc

    def _whole(self, name: str) -> bool:
        return not self._spans[name].on_grid or name in self._off_grid

    # --- bytes arriving -----------------------------------------------------------------------------

    def add_pieces(self, pieces: Sequence[tuple[str, int, int]]) -> None:
        """Bytes [start, start + length) of each named tensor have arrived: add their full rows.

        Piece edges inside a tensor fall on 4 KiB multiples (READ sizes do); a tensor with a piece
        that does not is reduced whole when its total is asked for.
        """
        groups: dict[int, list[tuple[_Span, int, int]]] = {}
        for name, start, length in pieces:
            if self._whole(name):
                continue
            span = self._spans[name]
            stop = start + length
            if start % ROW_BYTES or (stop != span.size and stop % ROW_BYTES):
                self._off_grid.add(name)
                continue
            first, last = start // ROW_BYTES, min(stop // ROW_BYTES, span.full_rows)
            if last > first:
                groups.setdefault(id(span.words), []).append((span, first, last))
        for runs in groups.values():
            self._add_rows(runs)

    def _add_rows(self, runs: list[tuple[_Span, int, int]]) -> None:
        """One reduction over the rows under `runs` (one region), then each run's weighted sum from
        prefix sums of the row sums, added into its tensor's accumulator."""
        words = runs[0][0].words
        device = words.device
        starts = [span.first_row + first for span, first, _ in runs]
        stops = [span.first_row + last for span, _, last in runs]
        lo, hi = min(starts), max(stops)
        sums = words[lo * ROW_WORDS : hi * ROW_WORDS].view(-1, ROW_WORDS).sum(dim=1)
        rows = torch.arange(lo, hi, dtype=torch.int64, device=device)
        zero = torch.zeros(1, dtype=torch.int64, device=device)
        plain = torch.cat([zero, sums.cumsum(0)])  # plain[i] = sum of s over rows lo .. lo + i - 1
        ranked = torch.cat([zero, sums.mul_(rows).cumsum(0)])  # the same of r * s
        begin = _device_index([s - lo for s in starts], device)
        end = _device_index([s - lo for s in stops], device)
        firsts = _device_index([span.first_row for span, _, _ in runs], device)
        total = plain[end] - plain[begin]
        weighted = ranked[end] - ranked[begin]
        values = weighted.mul_(2) - total * (firsts * 2 - 1)
        self._accumulator(device).index_add_(0, _device_index([span.index for span, _, _ in runs], device), values)

    def forget(self, names: Sequence[str]) -> None:
        """Zero the accumulators of `names` (their bytes will arrive again)."""
        by_device: dict[torch.device, list[int]] = {}
        for name in names:
            span = self._spans[name]
            by_device.setdefault(span.device, []).append(span.index)
            self._off_grid.discard(name)
        for device, indices in by_device.items():
            self._accumulator(device).index_fill_(0, _device_index(indices, device), 0)

    # --- verdicts -------------------------------------------------------------------------------------

    def totals(self, names: Sequence[str]) -> dict[str, int]:
        """The `row-sum-64` values of `names`, whose bytes have all been added, and their accumulators
        reset (bytes that arrive again, a repair, start from zero): one host sync per device."""
        by_device: dict[torch.device, list[str]] = {}
        for name in names:
            by_device.setdefault(self._spans[name].device, []).append(name)
        out: dict[str, int] = {}
        for device, group in by_device.items():
            acc = self._accumulator(device)
            whole = [n for n in group if self._whole(n)]
            for name in whole:
                self._add_whole(name, acc)
            regions: dict[int, list[_Span]] = {}
            for name in group:
                if not self._whole(name):
                    regions.setdefault(id(self._spans[name].words), []).append(self._spans[name])
            for spans in regions.values():
                self._add_tails(spans, acc)
            indices = _device_index([self._spans[n].index for n in group], device)
            picked = acc[indices]
            acc.index_fill_(0, indices, 0)
            self._off_grid.difference_update(whole)
            HOST_SYNCS[0] += 1
            for name, total in zip(group, picked.tolist(), strict=True):
                out[name] = row_sum_digest(total, self._spans[name].size)
        return out

    def _add_tails(self, spans: list[_Span], acc: torch.Tensor) -> None:
        """Each tensor's words after its full rows (weight `2 * full_rows + 1`) and its trailing bytes as
        one zero-padded word, gathered for the whole batch: a window of words per tensor, masked."""
        spans = [s for s in spans if s.size % ROW_BYTES]
        if not spans:
            return
        words = spans[0].words
        device = words.device
        counts = [s.size // 8 - s.full_rows * ROW_WORDS for s in spans]  # whole words in the last row
        trailing = [s.size % 8 for s in spans]
        width = max(c + (1 if t else 0) for c, t in zip(counts, trailing, strict=True))
        starts = _device_index([s.word_offset + s.full_rows * ROW_WORDS for s in spans], device)
        column = torch.arange(width, dtype=torch.int64, device=device)
        window = words[(starts[:, None] + column).clamp_(max=words.numel() - 1)]
        count = _device_index(counts, device)
        body = torch.where(column < count[:, None], window, 0).sum(dim=1)
        # the word holding the trailing bytes, with the bytes past the tensor's end masked off
        last = window.gather(1, count.clamp(max=width - 1)[:, None]).squeeze(1)
        masks = _device_index([(1 << (8 * t)) - 1 for t in trailing], device)
        weights = _device_index([2 * s.full_rows + 1 for s in spans], device)
        values = (body + torch.bitwise_and(last, masks)).mul_(weights)
        acc.index_add_(0, _device_index([s.index for s in spans], device), values)

    def _add_whole(self, name: str, acc: torch.Tensor) -> None:
        """A tensor off the row grid: the reference reduction of its own words, into its accumulator."""
        index = self._spans[name].index
        acc[index : index + 1] = row_sum_total(self._tensors[name])


_streams = threading.local()


@contextlib.contextmanager
def side_stream(layout: TensorLayout) -> Iterator[None]:
    """Run the block in a CUDA stream of this thread's own when the layout is in GPU memory (one per
    thread and device, reused), so checksum kernels queue beside the transfers, not behind them."""
    gpus = {r.device_id for r in layout.regions if r.kind == "VRAM"}  # regions, not tensors: asked per chunk
    if len(gpus) != 1:
        yield
        return
    device = torch.device("cuda", gpus.pop())
    streams: dict[torch.device, torch.cuda.Stream] = _streams.__dict__.setdefault("by_device", {})
    stream = streams.get(device)
    if stream is None:
        stream = streams[device] = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    with torch.cuda.stream(stream):
        yield


def row_sums(layout: TensorLayout, names: Sequence[str] | None = None) -> dict[str, int]:
    """`row-sum-64` of every named tensor of `layout` (all by default) with one host sync per device."""
    sums = RowSums(layout, names)
    sums.add_pieces([(name, 0, sums.size(name)) for name in sums.names])
    return sums.totals(sums.names)
