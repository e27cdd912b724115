"""Checksums of tensor bytes, computed where the tensor lives; the algorithm a manifest names.

Two algorithms, named in the manifest by the source: `xxh3-64` over the raw bytes (`xxh3`), for host
memory, and `row-sum-64` (`rowsum` the per-tensor reference, `batched` many tensors at once with one
host sync), for GPU memory. This face is what the rest of the package imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from modelexpress.p2p.checksum.algorithms import ALGORITHMS, ROW_SUM_64, XXH3_64, choose_algorithm
from modelexpress.p2p.checksum.batched import RowSums, row_sums, side_stream
from modelexpress.p2p.checksum.rowsum import ROW_WORDS, row_sum64, row_sum_digest, row_sum_digests, row_sum_total
from modelexpress.p2p.checksum.views import tensor_bytes
from modelexpress.p2p.checksum.xxh3 import StreamingChecksums, xxh3_64
from modelexpress.p2p.memory import TensorLayout

__all__ = [
    "ALGORITHMS", "ROW_SUM_64", "ROW_WORDS", "XXH3_64", "RowSums", "StreamingChecksums", "checksum", "checksums",
    "choose_algorithm", "row_sum64", "row_sum_digest", "row_sum_digests", "row_sum_total", "row_sums", "side_stream",
    "tensor_bytes", "xxh3_64",
]  # fmt: skip

_OF_TENSOR: dict[str, Callable[[torch.Tensor], int]] = {XXH3_64: xxh3_64, ROW_SUM_64: row_sum64}


def checksum(tensor: torch.Tensor, algorithm: str = XXH3_64) -> int:
    """The checksum of the tensor's bytes with `algorithm` (xxh3-64 by default)."""
    of_tensor = _OF_TENSOR.get(algorithm)
    if of_tensor is None:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    return of_tensor(tensor)


def checksums(layout: TensorLayout, algorithm: str, names: Sequence[str] | None = None) -> dict[str, int]:
    """The checksums of the named tensors of `layout` (all by default): `row-sum-64` batched on each
    device with one host sync, `xxh3-64` tensor by tensor."""
    if algorithm == ROW_SUM_64:
        return row_sums(layout, names)
    return {name: checksum(layout.tensors[name], algorithm) for name in (layout.tensors if names is None else names)}
