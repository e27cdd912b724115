"""Checksums of tensor bytes: xxh3-64 over the raw bytes, on host memory or (staged) from GPU memory."""

from __future__ import annotations

import torch
import xxhash

# GPU tensors are hashed through a bounded host staging buffer, never a full host copy.
_STAGING_BYTES = 64 << 20


def tensor_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor's bytes (any dtype, including bf16 and fp8)."""
    if not tensor.is_contiguous():
        raise ValueError("checksums are taken over contiguous tensors; call .contiguous() first")
    return tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)


def checksum(tensor: torch.Tensor) -> int:
    """xxh3-64 of the tensor's bytes."""
    data = tensor_bytes(tensor)
    if data.device.type == "cpu":
        return int(xxhash.xxh3_64_intdigest(data.numpy().data))
    hasher = xxhash.xxh3_64()
    _update(hasher, data)
    return int(hasher.intdigest())


def _update(hasher: xxhash.xxh3_64, data: torch.Tensor) -> None:
    """Feed flat uint8 bytes to the hasher; GPU bytes go through a bounded pinned staging buffer."""
    if data.device.type == "cpu":
        hasher.update(data.numpy().data)
        return
    staging = torch.empty(min(_STAGING_BYTES, max(1, data.numel())), dtype=torch.uint8, pin_memory=True)
    for start in range(0, data.numel(), staging.numel()):
        chunk = data[start : start + staging.numel()]
        staging[: chunk.numel()].copy_(chunk)
        hasher.update(staging[: chunk.numel()].numpy().data)


class StreamingChecksums:
    """xxh3-64 of tensors whose bytes arrive in pieces, in any order, hashed as soon as they line up.

    Each piece is hashed right after its bytes land (still in cache) rather than the whole tensor
    once complete, so only the last piece's hash is left when the transfer ends. Not thread-safe:
    feed it from one thread.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._tensors = tensors
        self._partial: dict[str, tuple[xxhash.xxh3_64, list[int], dict[int, int]]] = {}

    def add(self, name: str, start: int, length: int) -> int | None:
        """Bytes [start, start + length) of `name` have arrived; its checksum once every byte has."""
        data = tensor_bytes(self._tensors[name])
        if start == 0 and length == data.numel() and name not in self._partial:
            return checksum(self._tensors[name])
        hasher, hashed, waiting = self._partial.setdefault(name, (xxhash.xxh3_64(), [0], {}))
        waiting[start] = length
        while hashed[0] in waiting:  # hash the run of pieces that now continues the hashed prefix
            begin = hashed[0]
            end = begin + waiting.pop(begin)
            _update(hasher, data[begin:end])
            hashed[0] = end
        if hashed[0] < data.numel():
            return None
        del self._partial[name]
        return int(hasher.intdigest())

    def forget(self, name: str) -> None:
        """Drop what was hashed of `name` (its bytes will arrive again)."""
        self._partial.pop(name, None)
