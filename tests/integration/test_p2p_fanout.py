"""A source serves at most `MX_MAX_PULLERS` targets at once; the others wait and fan out as a tree.

Real CLI workers in their own processes (`modelexpress worker serve`, `worker pull --serve-after`)
sharing an embedded registry, real NIXL READs over UCX on host memory. The source's one place is
held by a puller of the test's own (a status stream opened as a target does), so every target that
arrives is turned away as busy, deterministically; once the place frees, the targets finish one
after another, each serving the next, and none falls back to disk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from hack.make_tiny_model import tiny_model, write
from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc
from tests.harness.processes import die_with_parent
from tests.helpers.sources import ROOT

TARGETS = 3


def _env(registry: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MX_METADATA_BACKEND": "embedded",
        "MX_REGISTRY_PATH": str(registry),
        "MX_WORKER_HOST": "127.0.0.1",
        "MX_MAX_PULLERS": "1",
        "MX_BUSY_WAIT_SECS": "120",
        "PYTHONPATH": str(ROOT),
    }


def _start(tmp: Path, registry: Path, name: str, *args: str) -> tuple[subprocess.Popen[str], Path, Path]:
    ready, log = tmp / f"{name}.ready", tmp / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelexpress", "worker", *args, "--ready-file", str(ready)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=_env(registry),
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )  # fmt: skip
    return proc, ready, log


def _wait(proc: subprocess.Popen[str], ready: Path, log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    return ready.read_text()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    write(out, tiny_model(layers=4, hidden=256), files=2)
    return out


def test_a_capped_source_turns_targets_away_and_they_fan_out_without_disk(model_dir: Path, tmp_path: Path) -> None:
    registry = tmp_path / "sources.db"
    source, ready, source_log = _start(
        tmp_path, registry, "source", "serve", str(model_dir), "--model-name", "org/tiny"
    )
    targets = []
    try:
        endpoint = _wait(source, ready, source_log)
        channel = grpc.insecure_channel(endpoint)
        holder = worker_pb2_grpc.WorkerServiceStub(channel).WatchStatus(worker_pb2.WatchStatusRequest(puller=True))
        first = next(iter(holder))  # the source's one place is taken from here on
        assert first.active_transfers == 1
        for n in range(TARGETS):
            targets.append(_start(tmp_path, registry, f"t{n}", "pull", "--model-name", "org/tiny", "--model-dir",
                                  str(model_dir), "--serve-after", "--format", "json"))  # fmt: skip
        deadline = time.monotonic() + 60
        while source_log.read_text().count("a target was refused") < TARGETS:
            assert time.monotonic() < deadline, source_log.read_text()[-3000:]
            time.sleep(0.1)
        assert not any(r.exists() for _, r, _ in targets)  # all waiting, none fell back to disk
        threading.Timer(0.5, holder.cancel).start()
        endpoints = [_wait(p, r, log) for p, r, log in targets]
        summaries = [json.loads(next(ln for ln in log.read_text().splitlines() if ln.startswith("{"))) for _, _, log
                     in targets]  # fmt: skip
        for s in summaries:
            assert s["tensors_from_disk"] == 0 and s["pulled_bytes"] > 0 and s["sources"], s
        served_by = [set(s["sources"]) for s in summaries]
        assert set().union(*served_by) <= {endpoint, *endpoints}
        names = {endpoint: "source", **{e: f"target {n}" for n, e in enumerate(endpoints)}}
        print("targets served by:", [sorted(names[e] for e in served) for served in served_by])
        channel.close()
    finally:
        for proc, _, _ in targets:
            _stop(proc)
        _stop(source)
    for n, log in enumerate([source_log, *[log for _, _, log in targets]]):
        stopped = next(ln for ln in log.read_text().splitlines() if ln.startswith("stopped;"))
        found = re.search(r"at most (\d+) target\(s\) at once, (\d+) turned away as busy", stopped)
        assert found is not None and int(found[1]) <= 1, stopped  # never more than MX_MAX_PULLERS at once
        if n == 0:
            assert int(found[2]) >= TARGETS, stopped
