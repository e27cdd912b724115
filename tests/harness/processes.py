"""Child processes of tests that never outlive the test run, even when it crashes."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal

_PR_SET_PDEATHSIG = 1
# Loaded before any fork, so the child only makes one libc call between fork and exec.
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """`preexec_fn`: the kernel SIGKILLs the child when the test process dies (nothing to shut down gracefully)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
