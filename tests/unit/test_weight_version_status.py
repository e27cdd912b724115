"""The version a ModelMetadata shows: the newest one a Ready source serves."""

from __future__ import annotations

from modelexpress.api import SourceState, WorkerSource
from modelexpress_operator.status import newest_version


def _source(version: str | None, state: SourceState = SourceState.READY) -> WorkerSource:
    return WorkerSource(pod="p", rank=0, endpoint="10.0.0.1:50051", state=state, weights_version=version)


def test_steps_compare_as_numbers() -> None:
    assert newest_version([_source("9"), _source("10"), _source("2")]) == "10"


def test_names_that_are_not_all_numbers_compare_as_strings() -> None:
    assert newest_version([_source("step-9"), _source("step-10"), _source("7")]) == "step-9"


def test_only_ready_sources_count() -> None:
    sources = [_source("3"), _source("4", SourceState.STALE), _source("5", SourceState.INITIALIZING), _source(None)]
    assert newest_version(sources) == "3"
    assert newest_version([_source(None), _source("8", SourceState.DRAINING)]) is None
