"""`row-sum-64` of many tensors at once: segmented reductions over a pool, one host sync per batch.

The per-tensor reference (`rowsum.row_sum64`) launches several kernels per tensor and waits for
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
from itertools import compress
from operator import itemgetter

import numpy
import torch

from modelexpress.p2p.checksum.rowsum import ROW_WORDS, row_sum_digests, row_sum_total
from modelexpress.p2p.memory import ROW_ALIGNMENT, TensorLayout
from modelexpress.p2p.stream import Stream

ROW_BYTES = ROW_WORDS * 8
assert ROW_BYTES == ROW_ALIGNMENT
_GATHER_WORDS = 1 << 21
"""Words gathered at once for the last rows of a batch (16 MiB of int64): bounds the window's memory."""


def _device_index(values: numpy.ndarray | Sequence[int], device: torch.device) -> torch.Tensor:
    host = torch.from_numpy(numpy.ascontiguousarray(values, dtype=numpy.int64))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host


def _column(values: Iterator[int] | map[int], count: int) -> numpy.ndarray:
    return numpy.fromiter(values, dtype=numpy.int64, count=count)


class RowSums:
    """Running `row-sum-64` accumulators for the tensors of one layout (each region on its device).

    The tensors are held as columns (region, offset, size, on the row grid or not), so a batch of
    pieces or verdicts costs a fixed number of numpy and torch operations, not Python work per
    tensor: 100k tensors are summed and read back in tens of milliseconds, not seconds.
    Not thread-safe: feed it from one thread. On a GPU, work is queued on the caller's current stream.
    """

    def __init__(self, layout: TensorLayout, names: Sequence[str] | None = None) -> None:
        """The named tensors (all by default), in layout order."""
        columns = layout.columns
        if names is None:
            self._build(layout, columns.names, columns.region_ids, columns.offsets, columns.nbytes)
            return
        wanted = set(names)
        kept = numpy.fromiter(map(wanted.__contains__, columns.names), dtype=bool, count=len(columns.names))
        self._build(
            layout,
            list(compress(columns.names, kept)),
            columns.region_ids[kept],
            columns.offsets[kept],
            columns.nbytes[kept],
        )

    @classmethod
    def of_stream(cls, layout: TensorLayout, stream: Stream) -> RowSums:
        """The tensors of a pull's byte stream, in stream order, from the columns the stream already has."""
        sums = cls.__new__(cls)
        sums._build(layout, stream.names, stream.region_ids, stream.offsets, stream.size_column)
        return sums

    def _build(
        self,
        layout: TensorLayout,
        names: list[str],
        region_ids: numpy.ndarray,
        offset: numpy.ndarray,
        size: numpy.ndarray,
    ) -> None:
        count = len(names)
        self.names: list[str] = names
        self._index = dict(zip(self.names, range(count), strict=True))
        self._tensors = layout.tensors
        # per region: its int64 words (when the buffer is its memory, 8-byte aligned) and its device
        self._words: dict[int, torch.Tensor] = {}
        limit = numpy.full(max((r.id for r in layout.regions), default=-1) + 1, -1, dtype=numpy.int64)
        self._devices: list[torch.device] = []
        device_of_region = numpy.zeros(len(limit), dtype=numpy.int64)
        for region, buffer in zip(layout.regions, layout.buffers(), strict=False):
            usable = buffer.numel() // 8 * 8
            aligned = buffer.data_ptr() == region.address and buffer.data_ptr() % 8 == 0
            if aligned and buffer.dtype == torch.uint8 and usable:
                self._words[region.id] = buffer[:usable].view(torch.int64)
                limit[region.id] = usable
        for region in layout.regions:
            words = self._words.get(region.id)
            device = words.device if words is not None else _region_device(region.kind, region.device_id)
            if device not in self._devices:
                self._devices.append(device)
            device_of_region[region.id] = self._devices.index(device)
        self._region, self._size = region_ids, size
        self._word_offset = offset // 8
        self._full_rows = self._size // ROW_BYTES
        self._first_row = self._word_offset // ROW_WORDS
        room = limit[self._region]
        # its rows are rows of its region's words (or it has no full row) and its last word is inside them
        self._on_grid = (
            (room >= 0)
            & (offset % 8 == 0)
            & ((self._size < ROW_BYTES) | (offset % ROW_BYTES == 0))
            & (offset + -(-self._size // 8) * 8 <= room)
        )
        self._device = device_of_region[self._region]
        self._acc: dict[int, torch.Tensor] = {}
        self._off_grid = numpy.zeros(count, dtype=bool)  # reduced whole in totals(): a piece was off the row grid

    def size(self, name: str) -> int:
        return int(self._size[self._index[name]])

    def _indices(self, names: Sequence[str]) -> numpy.ndarray:
        return _column(map(self._index.__getitem__, names), len(names))

    def _accumulator(self, device: int) -> torch.Tensor:
        acc = self._acc.get(device)
        if acc is None:
            acc = self._acc[device] = torch.zeros(len(self.names), dtype=torch.int64, device=self._devices[device])
        return acc

    # --- bytes arriving -----------------------------------------------------------------------------

    def add_pieces(self, pieces: Sequence[tuple[str, int, int]]) -> None:
        """Bytes [start, start + length) of each named tensor have arrived: add their full rows.

        Piece edges inside a tensor fall on 4 KiB multiples (READ sizes do); a tensor with a piece
        that does not is reduced whole when its total is asked for.
        """
        if not pieces:
            return
        count = len(pieces)
        start = _column(map(itemgetter(1), pieces), count)
        self.add_runs(
            self._indices(list(map(itemgetter(0), pieces))), start, start + _column(map(itemgetter(2), pieces), count)
        )

    def add_runs(self, index: numpy.ndarray, start: numpy.ndarray, stop: numpy.ndarray) -> None:
        """`add_pieces` as columns: bytes [start, stop) of the tensors at `index` (in this object's
        order: stream positions when made by `of_stream`) have arrived."""
        size = self._size[index]
        summed = self._on_grid[index] & ~self._off_grid[index]
        off = summed & ((start % ROW_BYTES != 0) | ((stop != size) & (stop % ROW_BYTES != 0)))
        self._off_grid[index[off]] = True
        first, last = start // ROW_BYTES, numpy.minimum(stop // ROW_BYTES, self._full_rows[index])
        keep = summed & ~off & (last > first)
        index, first, last = index[keep], first[keep], last[keep]
        regions = self._region[index]
        for region in numpy.unique(regions).tolist():
            mine = regions == region
            self._add_rows(region, index[mine], first[mine], last[mine])

    def _add_rows(self, region: int, index: numpy.ndarray, first: numpy.ndarray, last: numpy.ndarray) -> None:
        """One reduction over the rows under the runs [first, last) of the tensors `index` (one region),
        then each run's weighted sum from prefix sums of the row sums, added into its accumulator."""
        words = self._words[region]
        device = words.device
        base = self._first_row[index]
        starts, stops = base + first, base + last
        lo, hi = int(starts.min()), int(stops.max())
        sums = words[lo * ROW_WORDS : hi * ROW_WORDS].view(-1, ROW_WORDS).sum(dim=1)
        rows = torch.arange(lo, hi, dtype=torch.int64, device=device)
        zero = torch.zeros(1, dtype=torch.int64, device=device)
        plain = torch.cat([zero, sums.cumsum(0)])  # plain[i] = sum of s over rows lo .. lo + i - 1
        ranked = torch.cat([zero, sums.mul_(rows).cumsum(0)])  # the same of r * s
        begin = _device_index(starts - lo, device)
        end = _device_index(stops - lo, device)
        total = plain[end] - plain[begin]
        weighted = ranked[end] - ranked[begin]
        values = weighted.mul_(2) - total * _device_index(base * 2 - 1, device)
        self._accumulator(int(self._device[index[0]])).index_add_(0, _device_index(index, device), values)

    # --- verdicts -------------------------------------------------------------------------------------

    def totals(self, names: Sequence[str]) -> dict[str, int]:
        """The `row-sum-64` values of `names`, whose bytes have all been added, and their accumulators
        reset (bytes that arrive again, a repair, start from zero): one host sync per device."""
        return dict(zip(names, self.totals_at(self._indices(names)).tolist(), strict=True))

    def totals_at(self, index: numpy.ndarray) -> numpy.ndarray:
        """`totals` of the tensors at `index` (this object's order), as unsigned 64-bit values."""
        totals = numpy.zeros(len(index), dtype=numpy.uint64)
        devices = self._device[index]
        for device in numpy.unique(devices).tolist():
            chosen = numpy.flatnonzero(devices == device)
            group = index[chosen]
            acc = self._accumulator(device)
            whole = ~self._on_grid[group] | self._off_grid[group]
            for tensor in group[whole].tolist():
                self._add_whole(tensor, acc)
            tails = group[~whole & (self._size[group] % ROW_BYTES != 0)]
            regions = self._region[tails]
            for region in numpy.unique(regions).tolist():
                self._add_tails(region, tails[regions == region], acc)
            indices = _device_index(group, acc.device)
            picked = acc[indices]
            acc.index_fill_(0, indices, 0)
            self._off_grid[group[whole]] = False
            totals[chosen] = picked.cpu().numpy().view(numpy.uint64)
        return row_sum_digests(totals, self._size[index])

    def _add_tails(self, region: int, group: numpy.ndarray, acc: torch.Tensor) -> None:
        """Each tensor's words after its full rows (weight `2 * full_rows + 1`) and its trailing bytes as
        one zero-padded word, gathered a batch at a time: a window of words per tensor, masked. A tail
        that begins a row of the region (a tensor of 4 KiB or more in a pool) is read as that row's
        first words, a copy of whole rows; others word by word (several times slower on a CPU)."""
        words = self._words[region]
        rows = words[: words.numel() // ROW_WORDS * ROW_WORDS].view(-1, ROW_WORDS)
        starts = self._word_offset[group] + self._full_rows[group] * ROW_WORDS
        on_rows = (starts % ROW_WORDS == 0) & (starts // ROW_WORDS < rows.shape[0])
        for by_rows in (True, False):
            chosen = on_rows == by_rows
            if chosen.any():
                self._add_tail_windows(words, rows if by_rows else None, group[chosen], starts[chosen], acc)

    def _add_tail_windows(
        self,
        words: torch.Tensor,
        rows: torch.Tensor | None,
        group: numpy.ndarray,
        starts: numpy.ndarray,
        acc: torch.Tensor,
    ) -> None:
        device = words.device
        size, full = self._size[group], self._full_rows[group]
        counts = size // 8 - full * ROW_WORDS  # whole words in the last row
        trailing = size % 8
        width = int((counts + (trailing > 0)).max())
        column = torch.arange(width, dtype=torch.int64, device=device)
        step = max(1, _GATHER_WORDS // width)
        for at in range(0, len(group), step):
            part = slice(at, at + step)
            if rows is not None:
                window = rows[:, :width].index_select(0, _device_index(starts[part] // ROW_WORDS, device))
            else:
                first = _device_index(starts[part], device)
                window = words[(first[:, None] + column).clamp_(max=words.numel() - 1)]
            count = _device_index(counts[part], device)
            body = torch.where(column < count[:, None], window, 0).sum(dim=1)
            # the word holding the trailing bytes, with the bytes past the tensor's end masked off
            last = window.gather(1, count.clamp(max=width - 1)[:, None]).squeeze(1)
            masks = _device_index((1 << (8 * trailing[part])) - 1, device)
            weights = _device_index(2 * full[part] + 1, device)
            values = (body + torch.bitwise_and(last, masks)).mul_(weights)
            acc.index_add_(0, _device_index(group[part], device), values)

    def _add_whole(self, tensor: int, acc: torch.Tensor) -> None:
        """A tensor off the row grid: the reference reduction of its own words, into its accumulator."""
        acc[tensor : tensor + 1] = row_sum_total(self._tensors[self.names[tensor]]).to(acc.device)


def _region_device(kind: str, device_id: int) -> torch.device:
    return torch.device("cuda", device_id) if kind == "VRAM" else torch.device("cpu")


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
