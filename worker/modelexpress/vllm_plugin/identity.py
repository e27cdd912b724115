"""The layout identity of a vLLM worker rank, from values vLLM's configs hold (pure; no vLLM import)."""

from __future__ import annotations

from typing import Any

from modelexpress.p2p.identity import WorkerIdentity


def gpu_architecture(capability: tuple[int, int] | None) -> str | None:
    """`sm90` for compute capability (9, 0); None on CPU."""
    return f"sm{capability[0]}{capability[1]}" if capability else None


def dtype_label(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def vllm_identity(
    model: str,
    revision: str | None,
    engine_version: str,
    dtype: Any,
    quantization: str | None,
    tp_size: int,
    pp_size: int,
    tp_rank: int,
    pp_rank: int,
    ep_size: int = 1,
    capability: tuple[int, int] | None = None,
) -> WorkerIdentity:
    """Only ranks with equal identities exchange weights: same model, revision, engine version, dtype,
    quantization, parallel layout, GPU architecture and global rank (pipeline stage x TP size + TP rank)."""
    return WorkerIdentity(
        model_name=model,
        revision=revision or "main",
        engine="vllm",
        engine_version=engine_version,
        dtype=dtype_label(dtype),
        quantization=quantization,
        tensor_parallel_size=tp_size,
        pipeline_parallel_size=pp_size,
        expert_parallel_size=ep_size,
        gpu_architecture=gpu_architecture(capability),
        rank=pp_rank * tp_size + tp_rank,
    )
