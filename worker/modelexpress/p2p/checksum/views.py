"""Tensors as the bytes a checksum reads."""

from __future__ import annotations

import torch


def tensor_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor's bytes (any dtype, including bf16 and fp8)."""
    if not tensor.is_contiguous():
        raise ValueError("checksums are taken over contiguous tensors; call .contiguous() first")
    return tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
