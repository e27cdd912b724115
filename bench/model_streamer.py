"""runai-model-streamer against safetensors.torch.load_file, on the same ~1 GiB file in the same run.

Both end the way a loader does: every tensor copied into the model's preallocated parameters
(`load_file` alone only maps the file; the copy is what reads it). The page cache is warm for both
(the file is read once first). Prints the best-of-N seconds of each and the ratio
streamer/safetensors in throughput (> 1: the streamer is faster). `RUNAI_STREAMER_CONCURRENCY`
(default 8) applies.

Usage: python bench/model_streamer.py [--gib 1] [--tensors 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import best_of  # noqa: E402 - bench/ is on sys.path when a benchmark runs

from modelexpress.loader.streamer import stream_tensors  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mx-bench-streamer-"))
    try:
        per = int(args.gib * 2**30) // args.tensors // 2  # bf16
        save_file({f"layers.{i}.weight": torch.randn(per // 1024, 1024).to(torch.bfloat16) for i in range(args.tensors)},
                  str(work / "model.safetensors"))  # fmt: skip
        (work / "model.safetensors").read_bytes()  # warm the page cache for both readers

        params = {name: torch.empty_like(t) for name, t in load_file(str(work / "model.safetensors")).items()}

        def into_params(tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
            total = 0
            for name, tensor in tensors:
                params[name].copy_(tensor)
                total += tensor.numel() * tensor.element_size()
            return total

        def safetensors_load() -> int:
            return into_params(load_file(str(work / "model.safetensors")).items())

        def streamer_load() -> int:
            return into_params(stream_tensors(str(work)))

        st_seconds, st_bytes = best_of(args.repeat, safetensors_load)
        rs_seconds, rs_bytes = best_of(args.repeat, streamer_load)
        assert st_bytes == rs_bytes
        print(f"{st_bytes / 2**30:.2f} GiB in {args.tensors} tensors, best of {args.repeat}")
        print(f"  safetensors.load_file  {st_seconds:7.3f} s  {st_bytes / st_seconds / 1e9:6.2f} GB/s")
        print(f"  runai-model-streamer   {rs_seconds:7.3f} s  {rs_bytes / rs_seconds / 1e9:6.2f} GB/s")
        print(f"  ratio streamer/safetensors (throughput) = {st_seconds / rs_seconds:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
