"""Worker metrics relayed from an engine's other processes to the one that answers /metrics."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from prometheus_client import CollectorRegistry, Counter, Histogram

from modelexpress.metrics_relay import merge


def test_series_are_summed_per_labels_and_created_takes_the_earliest() -> None:
    families = []
    for amount, labels in ((3, ("ok",)), (4, ("ok",)), (5, ("failed",))):
        registry = CollectorRegistry()
        counter = Counter("mx_things_total", "things", ["outcome"], registry=registry)
        counter.labels(*labels).inc(amount)
        histogram = Histogram("mx_seconds", "seconds", buckets=(1, 10), registry=registry)
        histogram.observe(amount)
        families += registry.collect()
    merged = {f.name: f for f in merge(families)}
    values = {(s.name, tuple(s.labels.items())): s.value for f in merged.values() for s in f.samples}
    assert values[("mx_things_total", (("outcome", "ok"),))] == 7
    assert values[("mx_things_total", (("outcome", "failed"),))] == 5
    assert values[("mx_seconds_count", ())] == 3 and values[("mx_seconds_sum", ())] == 12
    assert values[("mx_seconds_bucket", (("le", "10.0"),))] == 3
    assert values[("mx_seconds_bucket", (("le", "1.0"),))] == 0
    created = [s.value for f in families for s in f.samples if s.name == "mx_seconds_created"]
    assert values[("mx_seconds_created", ())] == min(created)
    assert merged["mx_things"].type == "counter" and merged["mx_seconds"].type == "histogram"


CHILD = """
from modelexpress import metrics
from modelexpress.metrics_relay import set_up_relay
set_up_relay(metrics.RELAY)
metrics.PULL_BYTES.inc(1000)
metrics.PULLS.labels("ok").inc()
import time; time.sleep(2.5)  # publishes within a second
"""

PARENT = """
import subprocess, sys, time
from prometheus_client import REGISTRY
from modelexpress import metrics
from modelexpress.metrics_relay import set_up_relay
set_up_relay(metrics.RELAY)
metrics.PULL_BYTES.inc(24)
children = [subprocess.Popen([sys.executable, "-c", CHILD]) for _ in range(2)]
deadline = time.monotonic() + 20
while REGISTRY.get_sample_value("modelexpress_pull_bytes_total") != 2024 and time.monotonic() < deadline:
    time.sleep(0.1)
print(REGISTRY.get_sample_value("modelexpress_pull_bytes_total"),
      REGISTRY.get_sample_value("modelexpress_pulls_total", {"outcome": "ok"}))
for child in children:
    child.wait()
print(REGISTRY.get_sample_value("modelexpress_pull_bytes_total"))  # a process that ended still counts
"""


def test_the_first_process_reports_what_its_child_processes_pulled() -> None:
    """As `vllm serve` runs: the API server (first) answers /metrics, worker processes pull."""
    script = f"CHILD = {CHILD!r}\n" + textwrap.dedent(PARENT)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2024.0", "2.0", "2024.0"], done.stdout + done.stderr
