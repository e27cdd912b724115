"""Prometheus metrics of the server, read from the running server at each scrape: downloads started,
in flight and failed, file streams open and bytes streamed, calls refused for want of a valid token.

The server keeps plain counters (`ServerCounters`); a collector turns them into metric families on
demand, so nothing is exported that the server does not know, and a scrape costs no API call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from modelexpress.metrics import serve_metrics


@dataclass
class ServerCounters:
    """What the server counts as it runs (thread-safe increments)."""

    streamed_bytes: int = 0
    download_failures: int = 0
    refused_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


@dataclass
class ServerView:
    """Readings of a running server, as callables (the collector asks at scrape time)."""

    counters: ServerCounters
    downloads_started: Callable[[], int]
    downloads_in_flight: Callable[[], int]
    streams: Callable[[], int]


class ServerCollector(Collector):
    def __init__(self, view: ServerView) -> None:
        self.view = view

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        view, counters = self.view, self.view.counters
        yield CounterMetricFamily(
            "modelexpress_server_downloads_started",
            "Downloads the server started (one per model and revision at a time, however many callers wait)",
            value=view.downloads_started(),
        )
        yield CounterMetricFamily(
            "modelexpress_server_download_failures",
            "Downloads that ended in an error",
            value=counters.download_failures,
        )
        yield GaugeMetricFamily(
            "modelexpress_server_downloads_in_flight", "Downloads running now", value=view.downloads_in_flight()
        )
        yield GaugeMetricFamily("modelexpress_server_streams", "File streams to clients open now", value=view.streams())
        yield CounterMetricFamily(
            "modelexpress_server_streamed_bytes",
            "Bytes of model files streamed to clients",
            value=counters.streamed_bytes,
        )
        yield CounterMetricFamily(
            "modelexpress_server_refused_calls",
            "Calls refused for want of a valid ServiceAccount token (server.requireToken)",
            value=counters.refused_calls,
        )


def serve_server_metrics(view: ServerView, port: int | None, host: str) -> int | None:
    """Expose the server's /metrics on `port` (0 picks one); the port, or None when unset."""
    if port is None:
        return None
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServerCollector(view))
    return serve_metrics(port, host, registry)
