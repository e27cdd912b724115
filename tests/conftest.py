"""Shared test configuration: the control-plane fixtures are a plugin of the harness."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.harness.fixtures", "tests.harness.redis"]


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Remember that this run is partial (whole-run audits skip themselves then)."""
    if items:
        items[0].config._mx_deselected = True  # type: ignore[attr-defined]
