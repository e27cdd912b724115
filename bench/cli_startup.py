"""Start-up time of `modelexpress` verbs against a bare Python interpreter, in one run.

Each command runs 5 times (best kept): `python -c pass` (the floor), `modelexpress --version`,
`config generate`, `health` against a port nothing listens on (fails at once), `sources ls` on an
empty embedded registry, `cache ls` on an empty cache, `model ls` against no server, and `worker pull --help`. Light verbs must not import torch, NIXL or the
Kubernetes client; the goal is under 0.3 s on a quiet machine.

Usage: python bench/cli_startup.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "--version": [sys.executable, "-m", "modelexpress", "--version"],
    "config generate": [sys.executable, "-m", "modelexpress", "config", "generate"],
    "health (no server)": [sys.executable, "-m", "modelexpress", "--endpoint", "127.0.0.1:9", "--timeout", "0.2", "health"],
    "sources ls": [sys.executable, "-m", "modelexpress", "sources", "ls", "--model-name", "a/b"],
    "cache ls": [sys.executable, "-m", "modelexpress", "cache", "ls"],
    "model ls (no server)": [sys.executable, "-m", "modelexpress", "--endpoint", "127.0.0.1:9", "--timeout", "0.2", "model", "ls"],
    "worker pull --help": [sys.executable, "-m", "modelexpress", "worker", "pull", "--help"],
}  # fmt: skip


def best_of(argv: list[str], env: dict[str, str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mx-bench-cli-") as scratch:
        env = {**os.environ, "MX_REGISTRY_PATH": os.path.join(scratch, "sources.db"), "HOME": scratch}
        results = {name: best_of(argv, env) for name, argv in COMMANDS.items()}
    floor = results["python -c pass (floor)"]
    print(f"{'command':<24} {'seconds':>8} {'/ floor':>8}")
    for name, seconds in results.items():
        print(f"{name:<24} {seconds:>8.3f} {seconds / floor:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
