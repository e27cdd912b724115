"""Starting and stopping real source worker processes for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.processes import die_with_parent

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SourceProcess:
    proc: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def kill(self) -> None:
        """SIGKILL: the process vanishes mid-whatever, as a crashed pod would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_source(tmp: Path, *args: str, timeout: float = 60) -> SourceProcess:
    ready = tmp / f"ready-{time.monotonic_ns()}"
    log = ready.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.source_proc", "--ready-file", str(ready), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - one libc call, loaded before fork
        )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"source did not become Ready: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return SourceProcess(proc, ready.read_text(), log)


@contextmanager
def sources(tmp: Path, count: int, *args: str) -> Iterator[list[SourceProcess]]:
    started: list[SourceProcess] = []
    try:
        for _ in range(count):
            started.append(start_source(tmp, *args))
        yield started
    finally:
        for source in started:
            source.stop()
