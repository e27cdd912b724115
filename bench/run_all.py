"""Runs every benchmark in bench/ in turn; each prints ratios against a baseline measured in the same run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = [
    "nixl_host_read.py",
    "p2p_pull.py",
    "rowsums.py",
    "control_plane.py",
    "source_recording.py",
    "source_slices.py",
    "source_choice.py",
    "fanout.py",
    "hf_download.py",
    "server_streaming.py",
    "vllm_start.py",
    "vllm_artifacts.py",
    "rl_update.py",
    "cli_startup.py",
]


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        status |= subprocess.run([sys.executable, str(here / name)], check=False).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
