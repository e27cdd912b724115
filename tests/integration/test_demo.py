"""The README's main job (`make demo`): serve and pull over NIXL through the embedded registry, for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_serves_pulls_and_stripes() -> None:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "demo.sh")], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    pulls = [line for line in out.stdout.splitlines() if line.startswith("pulled ")]
    assert len(pulls) == 2, out.stdout
    assert "from 1 source(s); all checksums verified" in pulls[0]
    assert "from 2 source(s); all checksums verified" in pulls[1]
    lines = out.stdout.splitlines()
    assert lines[-1] == "== demo complete", lines[-5:]  # nothing after it (the workers' last words came before)
    assert sum(line.startswith("stopped; peers reported") for line in lines) == 2, out.stdout
