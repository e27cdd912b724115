"""The checksum algorithms a manifest can name, and which one a source of a layout publishes."""

from __future__ import annotations

from modelexpress.p2p.memory import TensorLayout

XXH3_64 = "xxh3-64"
ROW_SUM_64 = "row-sum-64"
ALGORITHMS = (XXH3_64, ROW_SUM_64)


def choose_algorithm(layout: TensorLayout, choice: str = "auto") -> str:
    """The checksum a source of `layout` publishes: `auto` is `row-sum-64` when any region is GPU
    memory (so targets verify on their GPU), else `xxh3-64`."""
    if choice == "auto":
        return ROW_SUM_64 if layout.in_gpu_memory else XXH3_64
    if choice not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {choice!r}; known: {', '.join(ALGORITHMS)}")
    return choice
