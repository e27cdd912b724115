"""Where a load's time goes, for real: a WeightLoader pulls over NIXL from another one, and each load's
phases land in its summary line and, once, in `modelexpress_load_phase_seconds` at /metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import torch
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from modelexpress.config.worker import WorkerSettings
from modelexpress.loader import WeightLoader
from modelexpress.metrics import serve_metrics
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.registry import EmbeddedRegistry

IDENTITY = WorkerIdentity(model_name="test/phases", dtype="float32")


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 64)
        self.head = nn.Linear(64, 8)


def _phase_counts(port: int) -> dict[str, float]:
    """`modelexpress_load_phase_seconds_count` by phase, from a live /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelexpress_load_phase_seconds_count":
                counts[sample.labels["phase"]] = sample.value
    return counts


def test_a_disk_load_and_a_pull_report_their_phases(tmp_path: Path) -> None:
    port = serve_metrics(0, "127.0.0.1")
    assert port is not None
    registry = EmbeddedRegistry(tmp_path / "sources.db", ttl_seconds=600)
    settings = WorkerSettings(worker_host="127.0.0.1", connect_timeout_secs=5)
    source_module = Small()
    before = _phase_counts(port)

    a = WeightLoader(IDENTITY, settings, registry)
    disk = a.load(source_module, lambda m: None)
    assert disk.mode == "disk" and set(disk.phases.seconds) == {"disk"}
    assert disk.summary("test/phases", 0).endswith(f"phases: disk {disk.phases.seconds['disk']:.2f}s")
    after_disk = _phase_counts(port)
    assert after_disk.get("disk", 0) - before.get("disk", 0) == 1

    b = WeightLoader(IDENTITY, settings, registry)
    b.prepare()
    target = Small()
    report = b.receive(target)
    assert report is not None and report.mode == "p2p"
    assert torch.equal(target.proj.weight, source_module.proj.weight)
    assert {"link", "manifest", "transfer", "verify"} <= set(report.phases.seconds)
    assert "disk" not in report.phases.seconds
    assert report.phases.seconds["transfer"] > 0
    line = report.summary("test/phases", 0)
    assert "phases: link " in line and ", transfer " in line and ", verify " in line
    b.publish(report)
    after_pull = _phase_counts(port)
    for phase in ("link", "manifest", "transfer", "verify"):
        assert after_pull.get(phase, 0) - after_disk.get(phase, 0) == 1, phase
    assert after_pull.get("disk", 0) == after_disk.get("disk", 0)
    for loader in (b, a):
        loader.close()
    registry.close()
