"""The chart's Prometheus alert rules and Grafana dashboard, as data: `make generate` writes them into
charts/modelexpress/files/, and the chart ships them when `monitoring.*` asks for them.

Every expression names only series the code exports (the operator's, the server's, the workers' as
relayed to vLLM's /metrics) plus the labels Prometheus adds to a scraped target (`namespace`, `pod`,
...); a test reads the names from live /metrics and parses each expression with a PromQL parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RATE = "$__rate_interval"
"""Grafana's rate window: at least four scrape intervals, whatever the time range."""


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    summary: str
    description: str
    severity: str = "warning"
    wait: str = "0m"
    """How long the condition holds before the alert fires (`for`)."""


ALERTS: tuple[Alert, ...] = (
    Alert(
        "ModelExpressPullsFallingBackToDisk",
        'sum by (namespace, pod) (increase(modelexpress_pulls_total{outcome=~"fallback|failed"}[15m])) > 0',
        "Replicas load weights from disk although peers were offered",
        "{{ $labels.namespace }}/{{ $labels.pod }}: {{ $value }} pull(s) in 15 minutes fell back to disk, "
        "entirely or for some tensors. The pod's log names each source and why it failed (connection, "
        "busy, identity, checksum).",
    ),
    Alert(
        "ModelExpressChecksumMismatches",
        "sum by (namespace, pod) (increase(modelexpress_checksum_mismatches_total[15m])) > 0",
        "Tensors received from peers failed verification",
        "{{ $labels.namespace }}/{{ $labels.pod }} received {{ $value }} tensor(s) whose checksum did not "
        "match in 15 minutes; they were fetched again or loaded from disk. Repeated mismatches point at a "
        "faulty source (its memory or its network path).",
    ),
    Alert(
        "ModelExpressPeersRefused",
        "sum by (namespace, pod, code) (increase(modelexpress_peer_refusals_total[15m])) > 0",
        "A source refused WorkerService calls (peer authentication)",
        "{{ $labels.namespace }}/{{ $labels.pod }} refused {{ $value }} call(s) with {{ $labels.code }} in "
        "15 minutes: a caller without a valid token or from another namespace, or the API server could "
        "not be asked (unavailable).",
    ),
    Alert(
        "ModelExpressWeightUpdatesFailing",
        'sum by (namespace, pod) (increase(modelexpress_weight_updates_total{outcome="failed"}[15m])) > 0',
        "Replicas failed to take new weight versions (RL)",
        "{{ $labels.namespace }}/{{ $labels.pod }} failed {{ $value }} weight update(s) in 15 minutes and "
        "still serves the version it had: its log says why (no source of the version in time, a layout "
        "that does not fit the model, bytes no source could repair).",
    ),
    Alert(
        "ModelExpressCacheFailed",
        'max by (namespace, name) (modelexpress_operator_cache_phase{phase="Failed"}) == 1',
        "A ModelCache failed to download",
        "ModelCache {{ $labels.namespace }}/{{ $labels.name }} is Failed: `kubectl describe modelcache` shows "
        "the reason and the fix; `kubectl annotate modelcache ... modelexpress.io/retry=$(date +%s)` tries "
        "again once it is fixed.",
        wait="5m",
    ),
    Alert(
        "ModelExpressOperatorNotReconciling",
        "(sum(modelexpress_operator_leader) or vector(0)) < 1",
        "No ModelExpress operator is active",
        "No operator replica has been the active (peering leader) one for 5 minutes: ModelMetadata sources, "
        "ModelCaches and the webhook's settings are not being reconciled. Check the operator pods.",
        severity="critical",
        wait="5m",
    ),
    Alert(
        "ModelExpressStatusWritesFailing",
        'sum(increase(modelexpress_operator_reconciles_total{outcome="error"}[10m])) > 3',
        "The operator cannot write ModelMetadata status",
        "{{ $value }} status write(s) failed in 10 minutes: targets may be handed stale sources. The "
        "operator's log has the API server's answers.",
        wait="10m",
    ),
    Alert(
        "ModelExpressSourcesStale",
        'sum by (namespace, model) (modelexpress_operator_sources{state="Stale"}) > 0',
        "Recorded sources stopped answering",
        "{{ $value }} rank(s) of ModelMetadata {{ $labels.namespace }}/{{ $labels.model }} are Stale: their "
        "pods are alive but their WorkerService stopped reporting. Targets skip them.",
        wait="10m",
    ),
)


def prometheus_rules() -> dict[str, Any]:
    """The `spec` of the chart's PrometheusRule."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.wait,
            "labels": {"severity": a.severity},
            "annotations": {"summary": a.summary, "description": a.description},
        }
        for a in ALERTS
    ]
    return {"groups": [{"name": "modelexpress", "rules": rules}]}


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[tuple[str, str], ...]
    """(PromQL, legend) pairs."""
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    stacked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Weight loads",
        (
            Panel(
                "Pull throughput",
                "Bytes per second received from peers over NIXL, per pod.",
                ((f"sum by (namespace, pod) (rate(modelexpress_pull_bytes_total[{RATE}]))", "{{namespace}}/{{pod}}"),),
                unit="Bps",
            ),
            Panel(
                "Where weights came from",
                "Weight loads of a rank in the time range: from peers (p2p) or from disk. The first replica of "
                "a model always loads from disk.",
                (("sum by (mode) (increase(modelexpress_weight_loads_total[$__range]))", "{{mode}}"),),
                kind="piechart",
                width=6,
            ),
            Panel(
                "Pull outcomes",
                "Pulls in the time range: ok, fallback (some tensors from disk), failed (all from disk).",
                (("sum by (outcome) (increase(modelexpress_pulls_total[$__range]))", "{{outcome}}"),),
                kind="bargauge",
                width=6,
            ),
            Panel(
                "Mean time per load phase",
                "Mean seconds of a load spent in each phase over the time range: link (status, manifest, NIXL "
                "connection), manifest (matching, planning), transfer (READs), verify (checks left after the "
                "last READ), disk, artifacts (compiled artifacts from a peer), postprocess (vLLM's processing "
                "of the loaded weights). link and artifacts run while vLLM builds the model.",
                (
                    (
                        "sum by (phase) (increase(modelexpress_load_phase_seconds_sum[$__range])) / "
                        "sum by (phase) (increase(modelexpress_load_phase_seconds_count[$__range]))",
                        "{{phase}}",
                    ),
                ),
                unit="s",
                kind="bargauge",
            ),
            Panel(
                "Slowest load phases (p90, 1h)",
                "90th percentile of each phase's seconds over the last hour of loads.",
                (
                    (
                        "histogram_quantile(0.9, sum by (le, phase) "
                        "(rate(modelexpress_load_phase_seconds_bucket[1h])))",
                        "{{phase}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Verified bytes and mismatches",
                "Bytes whose checksums were checked, by the verification policy that held, and tensors that "
                "failed their checksum (fetched again or loaded from disk).",
                (
                    (f"sum by (policy) (rate(modelexpress_pull_verified_bytes_total[{RATE}]))", "verified {{policy}}"),
                    (f"sum(rate(modelexpress_checksum_mismatches_total[{RATE}]))", "mismatched tensors/s"),
                ),
                unit="Bps",
            ),
            Panel(
                "Source failures",
                "Sources a pull abandoned, by reason: connect (link, identity), transfer (READs), busy (the "
                "source serves its maximum of targets).",
                ((f"sum by (reason) (rate(modelexpress_source_failures_total[{RATE}]))", "{{reason}}"),),
                stacked=True,
            ),
            Panel(
                "RL weight updates",
                "Bytes of new weight versions replicas pulled, from the trainer (the sources an update named) "
                "or from replicas that had the version already (docs/rl.md).",
                (
                    (
                        f"sum by (origin) (rate(modelexpress_weight_update_bytes_total[{RATE}]))",
                        "from {{origin}}",
                    ),
                ),
                unit="Bps",
                stacked=True,
            ),
        ),
    ),
    (
        "Sources and refusals",
        (
            Panel(
                "Sources per model",
                "Worker ranks recorded in each ModelMetadata's status, by state.",
                (
                    (
                        "sum by (namespace, model, state) (modelexpress_operator_sources)",
                        "{{namespace}}/{{model}} {{state}}",
                    ),
                ),
                stacked=True,
            ),
            Panel(
                "Bytes served to peers",
                "Bytes peers reported pulling from each source pod.",
                (
                    (
                        f"sum by (namespace, pod) (rate(modelexpress_served_bytes_total[{RATE}]))",
                        "{{namespace}}/{{pod}}",
                    ),
                ),
                unit="Bps",
            ),
            Panel(
                "Refusals",
                "Calls sources refused: peer authentication by status code, targets turned away as busy "
                "(MX_MAX_PULLERS), and server calls without a valid token.",
                (
                    (f"sum by (code) (rate(modelexpress_peer_refusals_total[{RATE}]))", "peer auth {{code}}"),
                    (f"sum(rate(modelexpress_refused_pullers_total[{RATE}]))", "busy"),
                    (f"sum(rate(modelexpress_server_refused_calls_total[{RATE}]))", "server token"),
                ),
                stacked=True,
            ),
            Panel(
                "Compiled artifacts",
                "Compiled-artifact fetches by outcome (received, present, refused, none, failed).",
                ((f"sum by (outcome) (rate(modelexpress_artifact_fetches_total[{RATE}]))", "{{outcome}}"),),
                stacked=True,
            ),
        ),
    ),
    (
        "Caches and server",
        (
            Panel(
                "Cache download progress",
                "Bytes each ModelCache's Job has written, of the model's size.",
                (
                    (
                        "max by (namespace, name) (modelexpress_operator_cache_downloaded_bytes) / "
                        "max by (namespace, name) (modelexpress_operator_cache_size_bytes)",
                        "{{namespace}}/{{name}}",
                    ),
                ),
                unit="percentunit",
                kind="bargauge",
                extra={"min": 0, "max": 1},
            ),
            Panel(
                "Caches by phase",
                "ModelCaches in each phase (Pending, Downloading, Ready, Failed, Evicted).",
                (("sum by (phase) (modelexpress_operator_cache_phase)", "{{phase}}"),),
                stacked=True,
            ),
            Panel(
                "Server streams and downloads",
                "Bytes the server streams to clients, and its downloads running now.",
                (
                    (f"sum(rate(modelexpress_server_streamed_bytes_total[{RATE}]))", "streamed B/s"),
                    ("sum(modelexpress_server_downloads_in_flight)", "downloads in flight"),
                ),
            ),
            Panel(
                "Operator reconciles",
                "Reconciles per second by resource and outcome, and the active operator (1 while a replica leads).",
                (
                    (
                        f"sum by (resource, outcome) (rate(modelexpress_operator_reconciles_total[{RATE}]))",
                        "{{resource}} {{outcome}}",
                    ),
                    ("sum(modelexpress_operator_leader)", "active operators"),
                ),
            ),
        ),
    ),
)


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, **panel.extra}
    if panel.stacked:
        defaults["custom"] = {"stacking": {"mode": "normal"}, "fillOpacity": 20}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}} if panel.kind != "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend}
            for n, (expr, legend) in enumerate(panel.targets)
        ],
    }


def grafana_dashboard() -> dict[str, Any]:
    """The dashboard's JSON model (Grafana 10+), with a Prometheus data source variable."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        y += 1
        x = 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return {
        "uid": "modelexpress",
        "title": "ModelExpress",
        "description": "Weight loads, sources, caches and the operator of ModelExpress (the chart's dashboard).",
        "tags": ["modelexpress"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
            ]
        },
        "panels": panels,
    }


def expressions() -> list[str]:
    """Every PromQL expression the alerts and the dashboard carry."""
    return [a.expr for a in ALERTS] + [expr for _, row in ROWS for panel in row for expr, _ in panel.targets]
