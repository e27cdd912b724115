"""The chart's monitoring objects (opt-in): rendered with the monitoring values on, they carry exactly
the generated alert rules and dashboard, and every expression in them is PromQL a real parser accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelexpress_operator import monitoring
from tests.helpers.chart import render
from tests.helpers.promql import names, parse

MONITORING_ON = {
    "monitoring": {
        "serviceMonitors": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Serving"}},
    },
    "workers": {"namespaces": ["serving-a", "serving-b"]},
}


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def rendered_expressions(docs: list[dict[str, Any]]) -> list[str]:
    """Every PromQL expression of the rendered PrometheusRule and dashboard."""
    rule = _one(docs, "PrometheusRule")
    dashboard = json.loads(_one(docs, "ConfigMap", "modelexpress-dashboard")["data"]["modelexpress.json"])
    alerts = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    panels = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return alerts + panels


def test_monitoring_is_off_by_default() -> None:
    kinds = {d["kind"] for d in render({})}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [d for d in render({}) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("dashboard")]


def test_monitoring_values_render_monitors_rules_and_the_dashboard() -> None:
    docs = render(MONITORING_ON)
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"modelexpress-operator", "modelexpress-server"}
    assert monitors["modelexpress-operator"]["spec"]["endpoints"][0]["honorLabels"] is True
    assert all(m["metadata"]["labels"]["release"] == "prometheus" for m in monitors.values())
    server_service = _one(docs, "Service", "modelexpress-server")
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics"} in server_service["spec"]["ports"]
    server = _one(docs, "Deployment", "modelexpress-server")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "MODEL_EXPRESS_SERVER_METRICS_PORT", "value": "9090"} in server["env"]
    pods = [d for d in docs if d["kind"] == "PodMonitor"]
    assert sorted(p["metadata"]["namespace"] for p in pods) == ["serving-a", "serving-b"]
    assert all(p["spec"]["selector"]["matchLabels"] == {"modelexpress.io/p2p": "enabled"} for p in pods)
    assert pods[0]["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]

    assert _one(docs, "PrometheusRule")["spec"] == monitoring.prometheus_rules()
    dashboard = _one(docs, "ConfigMap", "modelexpress-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Serving"}
    assert json.loads(dashboard["data"]["modelexpress.json"]) == monitoring.grafana_dashboard()


def test_every_alert_and_panel_expression_parses_as_promql() -> None:
    expressions = rendered_expressions(render(MONITORING_ON))
    assert len(expressions) == len(monitoring.expressions()) > 20
    for expr in expressions:
        assert names(expr).metrics, expr  # parses, and selects at least one series


def test_the_parser_refuses_what_prometheus_would() -> None:
    for broken in ("sum(rate(modelexpress_pulls_total[5m])", "rate(modelexpress_pulls_total)", "sum by phase (x)"):
        with pytest.raises(ValueError):
            parse(broken)


def test_panels_fit_the_grid_and_ids_are_unique() -> None:
    panels = monitoring.grafana_dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)
    places = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(places)) == len(places)
