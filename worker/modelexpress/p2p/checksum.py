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
    staging = torch.empty(min(_STAGING_BYTES, max(1, data.numel())), dtype=torch.uint8, pin_memory=True)
    for start in range(0, data.numel(), staging.numel()):
        chunk = data[start : start + staging.numel()]
        staging[: chunk.numel()].copy_(chunk)
        hasher.update(staging[: chunk.numel()].numpy().data)
    return int(hasher.intdigest())
