"""The pull loop's sleep while READs are in flight: short against fast READs, never past the ceiling."""

from __future__ import annotations

import itertools

import pytest

from modelexpress.p2p.pull.backoff import CEILING, FLOOR, FRACTION, Backoff


def _sleeps(backoff: Backoff, turns: int, oldest_age: float) -> list[float]:
    return [backoff.next(oldest_age) for _ in range(turns)]


def test_idle_turns_double_from_the_floor_up_to_the_ceiling_for_slow_reads() -> None:
    backoff = Backoff()
    backoff.landed(1.0)  # a READ of a second: the ceiling binds
    sleeps = _sleeps(backoff, 12, oldest_age=0.5)
    assert sleeps[0] == pytest.approx(2 * FLOOR)
    assert all(b == pytest.approx(min(2 * a, CEILING)) for a, b in itertools.pairwise(sleeps))
    assert sleeps[-1] == CEILING


def test_against_fast_reads_a_sleep_never_exceeds_a_fraction_of_a_read() -> None:
    """A 512 MiB READ into an H200 takes about 0.25 ms, four in flight about 1 ms: a sleep of the old
    fixed 4 ms ceiling would idle the copy engine for most of each round."""
    backoff = Backoff()
    backoff.landed(1e-3)
    assert max(_sleeps(backoff, 50, oldest_age=0.01)) == pytest.approx(1e-3 * FRACTION)


def test_before_any_read_lands_the_oldest_reads_age_bounds_the_sleep() -> None:
    backoff = Backoff()
    assert max(_sleeps(backoff, 20, oldest_age=1.6e-3)) == pytest.approx(1.6e-3 * FRACTION)
    assert max(_sleeps(Backoff(), 20, oldest_age=0.0)) == FLOOR  # just posted: the floor


def test_read_times_are_a_moving_average_and_progress_resets_the_sleep() -> None:
    backoff = Backoff()
    backoff.landed(1e-3)
    backoff.landed(5e-3)
    assert 1e-3 < (backoff.read_seconds or 0) < 5e-3
    _sleeps(backoff, 10, oldest_age=0.0)
    backoff.reset()
    assert backoff.next(0.0) == pytest.approx(2 * FLOOR)
