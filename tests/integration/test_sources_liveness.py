"""`sources ls` says what is known of a source's liveness: a SIGKILLed worker's record stays Ready in
the embedded registry until the TTL, so the listing shows when each record was last refreshed and,
with `--probe`, whether its WorkerService still answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def _ls(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelexpress.cli.main", "sources", "ls", *flags], env=env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip


def test_a_killed_worker_is_shown_as_not_answering(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(model / "model.safetensors"))
    env = {**os.environ, "MX_REGISTRY_PATH": str(tmp_path / "sources.db"), "MX_WORKER_HOST": "127.0.0.1"}
    ready = tmp_path / "ready"
    worker = subprocess.Popen(
        [sys.executable, "-m", "modelexpress.cli.main", "worker", "serve", str(model), "--model-name", "org/m",
         "--ready-file", str(ready)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert worker.poll() is None and time.monotonic() < deadline, "the worker did not become Ready"
            time.sleep(0.1)
        (alive,) = json.loads(_ls(env, "--probe", "--format", "json").stdout)
        assert alive["state"] == "Ready" and alive["answers"] is True and alive["secondsSinceRefresh"] < 30
        human = _ls(env, "--probe").stdout.splitlines()
        assert human[0].split()[-2:] == ["REFRESHED", "ANSWERS"] and human[1].split()[-1] == "yes", human
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    (dead,) = json.loads(_ls(env, "--probe", "--format", "json").stdout)
    assert dead["state"] == "Ready" and dead["answers"] is False  # the record outlives it; the probe tells
    assert "ANSWERS" not in _ls(env).stdout  # probing is asked for, never done behind the user's back
