"""The chart as the tests render it: through hack/chart.py, the same Helm engine users run with `make chart`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelexpress"
VALUES_FILES = ["values.yaml", "values-development.yaml", "values-production.yaml", "values-local-storage.yaml"]

_spec = importlib.util.spec_from_file_location("mx_hack_chart", ROOT / "hack" / "chart.py")
assert _spec is not None and _spec.loader is not None
chart_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chart_tool)
render = chart_tool.render
ChartError = chart_tool.ChartError


def values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text()) or {}
    return loaded


def validate(doc: dict[str, Any], version: str = "1.36.0") -> None:
    """Strict schema validation of one rendered object; a refusal fails the test with its message."""
    try:
        chart_tool.validate(doc, version)
    except ChartError as exc:
        raise AssertionError(str(exc)) from None
