"""ModelExpress metrics of every process of a multiprocess engine, at the engine's own /metrics.

`vllm serve` runs the API server (which answers /metrics), an engine-core process and one worker
process per rank; the weights are pulled, and peers served, in the worker processes. Each process has
its own Prometheus registry, so the API server would report `modelexpress_pull_bytes_total 0` for a
replica that pulled everything: a wrong answer on the dashboard. vLLM's own multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) is decided when prometheus_client is first imported, before any plugin
runs, so it cannot be turned on from here.

Instead, the first process that sets the relay up (the API server; or the only process, where the
engine runs in-process) makes a directory, names it in MX_METRICS_RELAY_DIR for its children, and
reports its own ModelExpress metrics summed with what the others publish there; every other process
writes its metrics (text format) to `<dir>/<pid>.prom` about once a second when they changed.
Counters, histograms and gauges are summed per series; `_created` takes the earliest.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from modelexpress.files import write_text_atomic

ENV = "MX_METRICS_RELAY_DIR"
PUBLISH_SECONDS = 1.0


class WorkerMetrics:
    """A collector of the worker library's registry, plus, where this process relays, the other
    processes' published metrics, summed per series."""

    def __init__(self, own: CollectorRegistry) -> None:
        self.own = own
        self.relay_dir: Path | None = None
        self.lock = threading.Lock()
        self.set_up = False

    def collect(self) -> Iterator[Metric]:
        families = list(self.own.collect())
        if self.relay_dir is not None:
            families += _published(self.relay_dir)
        yield from merge(families)


def merge(families: Iterable[Metric]) -> list[Metric]:
    """One family per name, each series the sum over the inputs (the earliest `_created`)."""
    heads: dict[str, Metric] = {}
    series: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in families:
        heads.setdefault(family.name, family)
        summed = series.setdefault(family.name, {})
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key not in summed:
                summed[key] = sample.value
            elif sample.name.endswith("_created"):
                summed[key] = min(summed[key], sample.value)
            else:
                summed[key] += sample.value
    merged = []
    for name, head in heads.items():
        family = Metric(name, head.documentation, head.type)
        for (sample_name, labels), value in series[name].items():
            family.add_sample(sample_name, dict(labels), value)
        merged.append(family)
    return merged


def _published(directory: Path) -> list[Metric]:
    families: list[Metric] = []
    for path in directory.glob("*.prom"):
        if path.name == f"{os.getpid()}.prom":
            continue
        try:
            families += text_string_to_metric_families(path.read_text())
        except (OSError, ValueError):
            continue  # a process that went away with its file; the next scrape reads what is there
    return families


def _publish_forever(own: CollectorRegistry, target: Path) -> None:
    last = b""
    while True:
        text = generate_latest(own)
        if text != last:
            try:
                write_text_atomic(target, text.decode())
                last = text
            except OSError:
                return  # the relaying process ended and took the directory: nobody reads these any more
        time.sleep(PUBLISH_SECONDS)


def set_up_relay(collector: WorkerMetrics) -> None:
    """In the first process: make the directory and report the others' metrics with its own. In any
    process started under it (MX_METRICS_RELAY_DIR inherited): publish there. Idempotent."""
    with collector.lock:
        if collector.set_up:
            return
        collector.set_up = True
    inherited = os.environ.get(ENV)
    if inherited and Path(inherited).is_dir():
        target = Path(inherited) / f"{os.getpid()}.prom"
        threading.Thread(target=_publish_forever, args=(collector.own, target), name="mx-metrics-relay",
                         daemon=True).start()  # fmt: skip
        return
    directory = Path(tempfile.mkdtemp(prefix="mx-metrics-"))
    os.environ[ENV] = str(directory)
    collector.relay_dir = directory
    atexit.register(shutil.rmtree, directory, True)


def install(own: CollectorRegistry) -> WorkerMetrics:
    """Register the worker library's metrics in prometheus_client's global registry (what every /metrics
    endpoint of this process serves) through one WorkerMetrics collector."""
    collector = WorkerMetrics(own)
    REGISTRY.register(collector)
    return collector
