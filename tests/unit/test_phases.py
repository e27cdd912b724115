"""Load phases: accumulated per phase, summarised in start order, observed once per load."""

from __future__ import annotations

import time

import pytest

from modelexpress.metrics import WORKER_REGISTRY, observe_phases
from modelexpress.phases import PHASES, Phases


def _count(phase: str) -> float:
    value = WORKER_REGISTRY.get_sample_value("modelexpress_load_phase_seconds_count", {"phase": phase})
    return value or 0.0


def test_phases_accumulate_and_read_in_start_order() -> None:
    phases = Phases()
    phases.add("transfer", 0.25)
    phases.add("link", 0.5)
    phases.add("link", 0.25)
    with phases.timing("verify"):
        time.sleep(0.02)
    assert phases.seconds["link"] == pytest.approx(0.75)
    assert phases.seconds["verify"] >= 0.02
    assert phases.summary().startswith("link 0.75s, transfer 0.25s, verify 0.0")
    assert list(PHASES) == ["link", "manifest", "transfer", "verify", "disk", "artifacts", "postprocess"]


def test_an_unknown_phase_is_named() -> None:
    with pytest.raises(ValueError, match="phase 'download': expected one of link, manifest"):
        Phases().add("download", 1.0)  # type: ignore[arg-type]


def test_one_load_is_one_observation_per_phase_it_met() -> None:
    before = {p: _count(p) for p in PHASES}
    phases = Phases()
    for _ in range(3):  # three sources linked: still one load
        phases.add("link", 0.1)
    phases.add("disk", 2.0)
    observe_phases(phases)
    after = {p: _count(p) for p in PHASES}
    assert {p: after[p] - before[p] for p in PHASES if after[p] != before[p]} == {"link": 1.0, "disk": 1.0}
