"""The real-vLLM tests' choice of dtype and thread binding per CPU kind (tests/helpers/cpu_kind.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cpu_kind import cpu_flags, thread_binds, vllm_cpu_dtype

# Flags as /proc/cpuinfo lists them on the two kinds of machine these tests have run on (abridged).
AMD_EPYC = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni vaes vpclmulqdq"
INTEL_AMX = "fpu sse sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: X\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return path


def test_w8a8_runs_in_bf16_where_amx_refuses_float32_and_in_float32_elsewhere(tmp_path: Path) -> None:
    intel = vllm_cpu_dtype(quantized=True, flags=cpu_flags(_cpuinfo(tmp_path, INTEL_AMX)))
    amd = vllm_cpu_dtype(quantized=True, flags=cpu_flags(_cpuinfo(tmp_path, AMD_EPYC)))
    assert intel.dtype == "bfloat16" and "amx_tile" in intel.reason
    assert amd.dtype == "float32" and "no AMX" in amd.reason


def test_unquantized_models_run_in_float32_on_both_kinds() -> None:
    for flags in (AMD_EPYC, INTEL_AMX):
        assert vllm_cpu_dtype(quantized=False, flags=frozenset(flags.split())).dtype == "float32"


def test_this_machine_gets_a_choice_with_its_reason() -> None:
    choice = vllm_cpu_dtype(quantized=True)
    assert choice.dtype in ("float32", "bfloat16") and choice.reason.startswith("W8A8 in " + choice.dtype)
    assert choice.dtype == ("bfloat16" if "amx_tile" in cpu_flags() else "float32")


def test_a_cpuinfo_without_flags_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\n")
    assert cpu_flags(path) == frozenset()


def test_ranks_are_bound_to_cores_of_their_own() -> None:
    assert thread_binds(2, {0, 1}) == "0|1"
    assert thread_binds(2, {0, 1, 2, 3, 4, 5, 6, 7}) == "0,1,2,3|4,5,6,7"
    assert thread_binds(1, {3, 5}) == "3,5"
    with pytest.raises(ValueError, match="tensor parallel 3 needs 3 CPUs"):
        thread_binds(3, {0, 1})
