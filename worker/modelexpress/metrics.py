"""Prometheus metrics of the worker library (bytes, transfers, failures, durations)."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

PULL_BYTES = Counter("modelexpress_pull_bytes_total", "Bytes received from peers over NIXL")
PULL_VERIFIED_BYTES = Counter(
    "modelexpress_pull_verified_bytes_total",
    "Bytes received from peers whose checksums were checked, by the verification policy that held",
    ["policy"],
)
PULLS = Counter("modelexpress_pulls_total", "Pulls by outcome", ["outcome"])
PULL_SECONDS = Histogram(
    "modelexpress_pull_duration_seconds",
    "Duration of whole pulls (connect, transfer, verification)",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
CHUNKS = Counter("modelexpress_transfer_chunks_total", "Chunk READs by outcome", ["outcome"])
SOURCE_FAILURES = Counter("modelexpress_source_failures_total", "Sources abandoned during a pull", ["reason"])
CHECKSUM_MISMATCHES = Counter("modelexpress_checksum_mismatches_total", "Tensors whose checksum did not match")
ARTIFACT_FETCHES = Counter(
    "modelexpress_artifact_fetches_total",
    "Compiled-artifact fetches by outcome (received, present, refused, none, failed)",
    ["outcome"],
)
ARTIFACT_BYTES = Counter("modelexpress_artifact_bytes_total", "Bytes of compiled artifacts received from peers")
SERVED_ARTIFACT_BYTES = Counter(
    "modelexpress_served_artifact_bytes_total", "Bytes of compiled artifacts served to peers"
)
REFUSED_PULLERS = Counter(
    "modelexpress_refused_pullers_total", "Targets this source refused as busy (MX_MAX_PULLERS reached)"
)
PEER_REFUSALS = Counter(
    "modelexpress_peer_refusals_total",
    "WorkerService calls this source refused (MX_PEER_AUTH), by status code",
    ["code"],
)
SERVED_PULLS = Counter("modelexpress_served_pulls_total", "Pulls peers reported complete against this worker")
SERVED_BYTES = Counter("modelexpress_served_bytes_total", "Bytes peers reported pulling from this worker")


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> int | None:
    """Expose /metrics on `port` (0 picks one); returns the port, or None when disabled."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound: int = server.server_port
    logging.getLogger(__name__).info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
