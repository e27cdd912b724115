"""Prometheus metrics of the operator: reconciles, errors, latency, API requests, sources by state."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "modelexpress_operator_reconciles_total",
    "Reconciles (status writes and handler runs) by resource and outcome",
    ["resource", "outcome"],
)
RECONCILE_SECONDS = Histogram(
    "modelexpress_operator_reconcile_duration_seconds",
    "Duration of one reconcile (a ModelMetadata status write covers every change pending for it)",
    ["resource"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter("modelexpress_operator_errors_total", "Errors by where they happened", ["where"])
API_REQUESTS = Counter(
    "modelexpress_operator_api_requests_total",
    "Kubernetes API requests made outside kopf, by verb and resource",
    ["verb", "resource"],
)
SOURCES = Gauge("modelexpress_operator_sources", "Worker entries in ModelMetadata status, by state", ["state"])
WATCHED_WORKERS = Gauge("modelexpress_operator_watched_workers", "Worker status streams being followed")
LEADER = Gauge("modelexpress_operator_leader", "1 while this replica is the active (peering leader) operator")
