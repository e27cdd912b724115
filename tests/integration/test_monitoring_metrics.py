"""The chart's alerts and dashboard name only what the code exports, read from live /metrics: the
operator (a real process on the control plane, with a ModelCache and a ModelMetadata to report on),
the server (a real process) and a worker (a real source process, whose metrics vLLM's /metrics relays).

Labels a scrape adds (`namespace`, `pod`, ...) and a histogram's `le` are allowed on every series; any
other label an expression matches or groups by must be on one of the series it selects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from hack.make_tiny_model import tiny_model, write
from modelexpress_operator import monitoring
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import GROUP, VERSION
from tests.harness.kube import wait_for
from tests.harness.processes import die_with_parent, free_port
from tests.helpers.fake_hub import FakeHub
from tests.helpers.promql import names
from tests.helpers.sources import start_source

ROOT = Path(__file__).resolve().parents[2]
# What Prometheus adds to every scraped series (Prometheus Operator's relabelling) and histogram buckets.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "endpoint", "service", "le"}


def _scrape(port: int) -> dict[str, set[str]]:
    """Every series name at a live /metrics and the label names seen on it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def _wait_scrape(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            _scrape(port)
        except OSError:
            return False
        return True

    wait_for(up, 60, what=f"/metrics on {port}")


@pytest.fixture
def operator_metrics(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[int]:
    """The operator as a process watching the test namespace (ModelCaches sized from a local hub), its
    /metrics on a free port."""
    port, log = free_port(), tmp_path / "operator.log"
    with FakeHub() as hub:
        hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": b"\0" * 4096})
        env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "HF_ENDPOINT": hub.endpoint,
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelexpress_operator", "--namespace", namespace, "--standalone",
                 "--metrics-port", str(port), "--health-port", "0"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=die_with_parent,  # noqa: PLW1509
            )  # fmt: skip
        try:
            _wait_scrape(port, proc, log)
            yield port
        finally:
            proc.terminate()
            proc.wait(30)


def test_alerts_and_panels_name_only_exported_series(
    operator_metrics: int, custom_objects: client.CustomObjectsApi, namespace: str, tmp_path: Path
) -> None:
    # Something for the operator to report on: a ModelCache (sized from the hub) and a ModelMetadata.
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelcaches", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelCache", "metadata": {"name": "tiny"},
        "spec": {"source": "hf://org/tiny"},
    })  # fmt: skip
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelMetadata", "metadata": {"name": "tiny"},
        "spec": {"modelName": "org/tiny"},
    })  # fmt: skip
    # what the cache's Job pod writes as it downloads (`cache download --progress-to`)
    wait_for(lambda: custom_objects.get_namespaced_custom_object_status(GROUP, VERSION, namespace, "modelcaches", "tiny")
             .get("status", {}).get("jobName"), 30, what="the cache's Job")  # fmt: skip
    custom_objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "modelcaches", "tiny", {
        "status": {"phase": "Downloading", "progress": {"bytesDone": 1024, "bytesTotal": 4098, "percent": 24}},
    })  # fmt: skip
    wanted = ("modelexpress_operator_cache_size_bytes", "modelexpress_operator_sources")
    operator = wait_for(
        lambda: (s := _scrape(operator_metrics)) and all(s.get(name) for name in wanted) and s,
        60,
        what="the operator's gauges of the cache and the metadata",
    )

    server_port, server_log = free_port(), tmp_path / "server.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "modelexpress.cli.main", "server", "--host", "127.0.0.1", "--port", "0"],
            env={**os.environ, "MODEL_EXPRESS_SERVER_METRICS_PORT": str(server_port), "PYTHONPATH": str(ROOT),
                 "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / "models.db")},
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=die_with_parent,  # noqa: PLW1509
        )  # fmt: skip
    model_dir = tmp_path / "model"
    write(model_dir, tiny_model())
    worker_port = free_port()
    worker = start_source(tmp_path, "--model-dir", str(model_dir), env={"MX_METRICS_PORT": str(worker_port)})
    try:
        _wait_scrape(server_port, server, server_log)
        exported = {**operator, **_scrape(server_port), **_scrape(worker_port)}
    finally:
        worker.stop()
        server.terminate()
        server.wait(30)

    expressions = monitoring.expressions()
    rule_labels = {label for a in monitoring.ALERTS for label in _template_labels(a.description + a.summary)}
    problems = []
    for expr in expressions:
        found = names(expr)
        problems += [f"{expr}: no series {m} is exported" for m in sorted(found.metrics - set(exported))]
        for labels, metrics in found.uses:
            known = TARGET_LABELS.union(*(exported.get(m, set()) for m in metrics))
            problems += [f"{expr}: label {label!r} is on none of {sorted(metrics)}" for label in labels - known]
    legends = {legend for _, row in monitoring.ROWS for panel in row for _, legend in panel.targets}
    used_in_text = rule_labels | {label for legend in legends for label in _template_labels(legend)}
    every_label = TARGET_LABELS.union(*exported.values())
    problems += [f"label {label!r} in a legend or an alert's text is exported nowhere"
                 for label in sorted(used_in_text - every_label)]  # fmt: skip
    assert not problems, json.dumps(problems, indent=1)


def _template_labels(text: str) -> set[str]:
    """Labels named in Grafana legends (`{{pod}}`) and alert templates (`{{ $labels.pod }}`)."""
    import re

    return set(re.findall(r"\{\{\s*(?:\$labels\.)?([a-z_]+)\s*\}\}", text)) - {"value"}
