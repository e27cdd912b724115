"""Prometheus metrics of the operator: reconciles, errors, latency, API requests, and what the custom
resources say (sources per model and state, each cache's phase and download progress)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from modelexpress.api.modelcache import ModelCachePhase
from modelexpress.api.modelmetadata import SourceState

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
SOURCES = Gauge(
    "modelexpress_operator_sources",
    "Worker ranks a ModelMetadata's status records, by state",
    ["namespace", "model", "state"],
)
CACHE_PHASE = Gauge(
    "modelexpress_operator_cache_phase",
    "1 for the phase a ModelCache is in, 0 for the others",
    ["namespace", "name", "phase"],
)
CACHE_DOWNLOADED_BYTES = Gauge(
    "modelexpress_operator_cache_downloaded_bytes",
    "Bytes a ModelCache's download Job has written (status.progress.bytesDone)",
    ["namespace", "name"],
)
CACHE_SIZE_BYTES = Gauge(
    "modelexpress_operator_cache_size_bytes",
    "Bytes a ModelCache's model takes (status.progress.bytesTotal, else sizeBytes, else the source's listing)",
    ["namespace", "name"],
)
WATCHED_WORKERS = Gauge("modelexpress_operator_watched_workers", "Worker status streams being followed")
LEADER = Gauge("modelexpress_operator_leader", "1 while this replica is the active (peering leader) operator")

# Label values known in advance exist from the start at zero (dashboards show 0, rate() sees the first).
for _resource, _outcomes in (
    ("modelmetadatas", ("ok", "invalid")),
    ("modelcaches", ("ok", "invalid", "waiting", "retry-scheduled", "retry-requested", "retry-ignored")),
):
    for _outcome in _outcomes:
        RECONCILES.labels(_resource, _outcome)
for _where in ("event", "record", "status-write", "wrong-pod"):
    ERRORS.labels(_where)


def show_sources(namespace: str, model: str, states: Iterable[SourceState]) -> None:
    """A ModelMetadata's recorded ranks by state, as its status was just written."""
    counts = collections.Counter(states)
    for state in SourceState:
        SOURCES.labels(namespace, model, state.value).set(counts[state])


def forget_sources(namespace: str, model: str) -> None:
    for state in SourceState:
        _remove(SOURCES, namespace, model, state.value)


def show_cache(namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
    """The ModelCache's phase and download progress, from its status."""
    status = status or {}
    current = status.get("phase") or ModelCachePhase.PENDING.value
    for phase in ModelCachePhase:
        CACHE_PHASE.labels(namespace, name, phase.value).set(1 if phase.value == current else 0)
    progress = status.get("progress") or {}
    CACHE_DOWNLOADED_BYTES.labels(namespace, name).set(progress.get("bytesDone") or 0)
    size = progress.get("bytesTotal") or status.get("sizeBytes") or status.get("sourceBytes")
    if size:
        CACHE_SIZE_BYTES.labels(namespace, name).set(size)


def forget_cache(namespace: str, name: str) -> None:
    for phase in ModelCachePhase:
        _remove(CACHE_PHASE, namespace, name, phase.value)
    _remove(CACHE_DOWNLOADED_BYTES, namespace, name)
    _remove(CACHE_SIZE_BYTES, namespace, name)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set (a cache deleted before its size was known)
        gauge.remove(*labels)
