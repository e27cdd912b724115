"""Prometheus metrics of the worker library (bytes, transfers, failures, durations)."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from modelexpress.metrics_relay import install
from modelexpress.phases import PHASES, Phases

# The library's own registry, reported through one collector of the global registry, which adds the
# other processes' metrics where an engine runs several (metrics_relay.py).
WORKER_REGISTRY = CollectorRegistry(auto_describe=True)

PULL_BYTES = Counter("modelexpress_pull_bytes_total", "Bytes received from peers over NIXL", registry=WORKER_REGISTRY)
PULL_VERIFIED_BYTES = Counter(
    "modelexpress_pull_verified_bytes_total",
    "Bytes received from peers whose checksums were checked, by the verification policy that held",
    ["policy"],
    registry=WORKER_REGISTRY,
)
PULLS = Counter("modelexpress_pulls_total", "Pulls by outcome", ["outcome"], registry=WORKER_REGISTRY)
PULL_SECONDS = Histogram(
    "modelexpress_pull_duration_seconds",
    "Duration of whole pulls (connect, transfer, verification)",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
    registry=WORKER_REGISTRY,
)
LOAD_PHASE_SECONDS = Histogram(
    "modelexpress_load_phase_seconds",
    "Seconds of one weight load spent in each phase (modelexpress.phases.PHASES); phases may overlap",
    ["phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
    registry=WORKER_REGISTRY,
)
WEIGHT_LOADS = Counter(
    "modelexpress_weight_loads_total",
    "Weight loads of a rank by where the weights came from (p2p: peers over NIXL; disk)",
    ["mode"],
    registry=WORKER_REGISTRY,
)
CHUNKS = Counter("modelexpress_transfer_chunks_total", "Chunk READs by outcome", ["outcome"], registry=WORKER_REGISTRY)
SOURCE_FAILURES = Counter(
    "modelexpress_source_failures_total", "Sources abandoned during a pull", ["reason"], registry=WORKER_REGISTRY
)
CHECKSUM_MISMATCHES = Counter(
    "modelexpress_checksum_mismatches_total", "Tensors whose checksum did not match", registry=WORKER_REGISTRY
)
ARTIFACT_FETCHES = Counter(
    "modelexpress_artifact_fetches_total",
    "Compiled-artifact fetches by outcome (received, present, refused, none, failed)",
    ["outcome"],
    registry=WORKER_REGISTRY,
)
ARTIFACT_BYTES = Counter(
    "modelexpress_artifact_bytes_total", "Bytes of compiled artifacts received from peers", registry=WORKER_REGISTRY
)
SERVED_ARTIFACT_BYTES = Counter(
    "modelexpress_served_artifact_bytes_total", "Bytes of compiled artifacts served to peers", registry=WORKER_REGISTRY
)
REFUSED_PULLERS = Counter(
    "modelexpress_refused_pullers_total",
    "Targets this source refused as busy (MX_MAX_PULLERS reached)",
    registry=WORKER_REGISTRY,
)
PEER_REFUSALS = Counter(
    "modelexpress_peer_refusals_total",
    "WorkerService calls this source refused (MX_PEER_AUTH), by status code",
    ["code"],
    registry=WORKER_REGISTRY,
)
SERVED_PULLS = Counter(
    "modelexpress_served_pulls_total", "Pulls peers reported complete against this worker", registry=WORKER_REGISTRY
)
SERVED_BYTES = Counter(
    "modelexpress_served_bytes_total", "Bytes peers reported pulling from this worker", registry=WORKER_REGISTRY
)
WEIGHT_UPDATES = Counter(
    "modelexpress_weight_updates_total",
    "Weight versions a replica was asked to take (RL), by outcome",
    ["outcome"],
    registry=WORKER_REGISTRY,
)
WEIGHT_UPDATE_BYTES = Counter(
    "modelexpress_weight_update_bytes_total",
    "Bytes of weight versions pulled, by origin: the sources an update named (the trainer), or replicas",
    ["origin"],
    registry=WORKER_REGISTRY,
)

# Every label value known in advance exists from the start, at zero: a dashboard shows 0 rather than
# "no data", an alert's rate() sees the first event, and each series is at /metrics before it happens.
_KNOWN_LABELS: tuple[tuple[Counter | Histogram, tuple[str, ...]], ...] = (
    (PULL_VERIFIED_BYTES, ("full", "sampled", "off")),
    (PULLS, ("ok", "fallback", "failed")),
    (LOAD_PHASE_SECONDS, PHASES),
    (WEIGHT_LOADS, ("p2p", "disk")),
    (CHUNKS, ("done", "failed")),
    (SOURCE_FAILURES, ("busy", "connect", "transfer")),
    (ARTIFACT_FETCHES, ("received", "present", "refused", "none", "failed")),
    (PEER_REFUSALS, ("unauthenticated", "permission_denied", "unavailable")),
    (WEIGHT_UPDATES, ("installed", "unchanged", "failed")),
    (WEIGHT_UPDATE_BYTES, ("trainer", "replica")),
)
for _metric, _values in _KNOWN_LABELS:
    for _value in _values:
        _metric.labels(_value)

RELAY = install(WORKER_REGISTRY)


def observe_phases(phases: Phases) -> None:
    """Record one load's phases in the histogram (once per load, whatever it timed several times)."""
    for phase, seconds in phases.seconds.items():
        LOAD_PHASE_SECONDS.labels(phase).observe(seconds)


def serve_metrics(port: int | None, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> int | None:
    """Expose `registry` (the global one by default) at /metrics on `port` (0 picks one); returns the
    port, or None when disabled."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound: int = server.server_port
    logging.getLogger(__name__).info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
