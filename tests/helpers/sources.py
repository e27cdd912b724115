"""Starting and stopping real source worker processes for tests."""

from __future__ import annotations

import json
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


def start_source(tmp: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> SourceProcess:
    """A real source process; `env` adds variables (e.g. MX_POD_UID) to this process's environment."""
    ready = tmp / f"ready-{time.monotonic_ns()}"
    log = ready.with_suffix(".log")
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
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
def sources(tmp: Path, count: int, *args: str, env: dict[str, str] | None = None) -> Iterator[list[SourceProcess]]:
    started: list[SourceProcess] = []
    try:
        for _ in range(count):
            started.append(start_source(tmp, *args, env=env))
        yield started
    finally:
        for source in started:
            source.stop()


class Fleet:
    """A `fleet_proc` process: many real WorkerService servers, commanded over stdin."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.fleet_proc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )

    def command(self, op: str, **fields: object) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fleet process exited with {self.proc.poll()}")
        reply: dict[str, object] = json.loads(line)
        return reply

    def start(self, workers: list[dict[str, object]]) -> list[int]:
        ports = self.command("start", workers=workers)["ports"]
        assert isinstance(ports, list)
        return [int(p) for p in ports]

    def pause(self) -> None:
        """SIGSTOP: every worker in it stops answering, with its connections left open (a hung process)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextmanager
def fleet() -> Iterator[Fleet]:
    running = Fleet()
    try:
        yield running
    finally:
        running.close()
