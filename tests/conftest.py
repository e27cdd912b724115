"""Shared test configuration: the control-plane fixtures are a plugin of the harness."""

from __future__ import annotations

import os

# Tests start worker processes (fork, then exec) while this process holds gRPC channels. With gRPC's
# fork support on, its handlers are skipped when other threads are inside gRPC, and the child could
# abort between fork and exec on a poller whose epoll descriptor the exec preparation had closed
# ("epoll_wait error: Bad file descriptor", SIGABRT). No child here uses gRPC before exec: off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import pytest

pytest_plugins = ["tests.harness.fixtures", "tests.harness.redis"]


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Remember that this run is partial (whole-run audits skip themselves then)."""
    if items:
        items[0].config._mx_deselected = True  # type: ignore[attr-defined]
