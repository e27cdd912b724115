"""What replicas exchange, and how a replica finds out that it cannot take part (the capture rule).

Replicas exchange the *loaded state*: every parameter and buffer exactly as loading left it, before
the engine's post-processing. Each replica then post-processes for itself, as a disk load does, so
whatever post-processing derives (vLLM's CPU-packed GEMM weights, MLA's absorbed matrices,
quantization repacks, tensors hung on attributes or captured in closures) comes from the same bytes
by the same code: a pulled replica is the model a disk load gives.

Two things break the rule; both are detected on the module itself, never listed by model name:

- the loaded state cannot be captured: tensors that do not exist yet when loading starts (meta
  tensors: online quantization, lazy loaders), tensors whose bytes live in inner tensors (tensor
  subclasses), tensors kept on several devices (CPU offload) -- `capture_gate`;
- post-processing changed loaded bytes in place, so the memory a source would serve no longer holds
  the loaded state -- `changed_in_place`, by checksumming before and after post-processing.

Either way the replica loads (or stays loaded) from disk and is not published as a source.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from modelexpress.loader.rehome import module_tensors
from modelexpress.p2p.checksum import checksums
from modelexpress.p2p.memory import TensorLayout


def _example(names: list[str]) -> str:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{names[0]}{more}"


def capture_gate(module: nn.Module) -> str | None:
    """Why the module's loaded state cannot be exchanged peer to peer; None when it can."""
    tensors = module_tensors(module)
    if not tensors:
        return "the model has no parameters or buffers"
    meta = [name for name, (t, _) in tensors.items() if t.is_meta]
    if meta:
        return (
            f"{_example(meta)} are not materialised before loading (meta tensors: online quantization or a lazy "
            "loader creates them while reading the checkpoint)"
        )
    wrapped = [name for name, (t, _) in tensors.items() if is_traceable_wrapper_subclass(t)]
    if wrapped:
        return f"{_example(wrapped)} keep their bytes in inner tensors ({type(tensors[wrapped[0]][0]).__name__})"
    strided = [name for name, (t, _) in tensors.items() if t.layout != torch.strided]
    if strided:
        return f"{_example(strided)} are not dense tensors"
    devices = sorted({str(t.device) for t, _ in tensors.values()})
    if len(devices) > 1:
        return f"the model's tensors are on several devices ({', '.join(devices)}; CPU offload?)"
    return None


def state_checksums(layout: TensorLayout, algorithm: str) -> dict[str, int]:
    """The checksum of every tensor of the layout (the loaded state a source will serve)."""
    return checksums(layout, algorithm)


def changed_in_place(layout: TensorLayout, before: Mapping[str, int], algorithm: str) -> list[str]:
    """Tensors of the layout whose bytes no longer match the checksums taken before post-processing."""
    now = checksums(layout, algorithm)
    return [name for name in layout.tensors if now[name] != before[name]]
