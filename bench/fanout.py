"""A burst of targets against one source, with a cap per source (`MX_MAX_PULLERS`) and without.

Real CLI workers on this host (`modelexpress worker serve`, then N x `worker pull --serve-after`),
an embedded registry, real NIXL READs over UCX on host memory. Each round starts one source, then N
targets at once, and times how long until every target is Ready (serving). With the cap, a busy
source turns targets away, they wait and pull from targets that finished (a tree); without, all N
pull from the one source at once. Prints both times, the ratio, and how many targets the first
source served in each round.

Usage: python bench/fanout.py [--targets 6] [--cap 2] [--layers 4] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hack.make_tiny_model import tiny_model, write  # noqa: E402


def _start(tmp: Path, env: dict[str, str], name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    ready, log = tmp / f"{name}.ready", tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modelexpress", "worker", *args, "--ready-file", str(ready)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    return proc, ready, log


def burst(tmp: Path, model: Path, targets: int, cap: int) -> tuple[float, int, int]:
    """Seconds until all targets are Ready; targets the first source served; targets that fell back to disk."""
    env = {**os.environ, "MX_METADATA_BACKEND": "embedded", "MX_REGISTRY_PATH": str(tmp / "sources.db"),
           "MX_WORKER_HOST": "127.0.0.1", "MX_MAX_PULLERS": str(cap), "PYTHONPATH": str(ROOT)}  # fmt: skip
    procs = []
    try:
        source, ready, log = _start(tmp, env, "source", "serve", str(model), "--model-name", "bench/fanout")
        procs.append(source)
        while not ready.exists():
            if source.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
        endpoint = ready.read_text()
        started = time.perf_counter()
        runs = [_start(tmp, env, f"t{n}", "pull", "--model-name", "bench/fanout", "--model-dir", str(model),
                       "--serve-after", "--format", "json") for n in range(targets)]  # fmt: skip
        procs += [p for p, _, _ in runs]
        while not all(r.exists() for _, r, _ in runs):
            for p, _, lg in runs:
                if p.poll() is not None:
                    raise RuntimeError(lg.read_text()[-2000:])
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        summaries = [
            json.loads(next(ln for ln in lg.read_text().splitlines() if ln.startswith("{"))) for _, _, lg in runs
        ]
        from_source = sum(1 for s in summaries if s["sources"] == [endpoint])
        from_disk = sum(1 for s in summaries if s["tensors_from_disk"])
        return seconds, from_source, from_disk
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=6)
    parser.add_argument("--cap", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mx-bench-fanout-") as scratch:
        tmp = Path(scratch)
        model = tmp / "model"
        write(model, tiny_model(layers=args.layers, hidden=args.hidden), files=2)
        nbytes = sum(f.stat().st_size for f in model.glob("*.safetensors"))
        rows = {}
        for label, cap in (("no cap", 0), (f"MX_MAX_PULLERS={args.cap}", args.cap)):
            (tmp / label.replace("=", "-").replace(" ", "-")).mkdir()
            rows[label] = burst(tmp / label.replace("=", "-").replace(" ", "-"), model, args.targets, cap)
        print(f"{args.targets} targets at once, one source, {nbytes / 2**20:.0f} MiB on host memory; this host")
        print(f"{'round':<20} {'all Ready s':>12} {'from the source':>16} {'from disk':>10}")
        for label, (seconds, from_source, from_disk) in rows.items():
            print(f"{label:<20} {seconds:>12.2f} {from_source:>16} {from_disk:>10}")
        capped, free = rows[f"MX_MAX_PULLERS={args.cap}"][0], rows["no cap"][0]
        print(f"time to all Ready, capped / uncapped: {capped / free:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
