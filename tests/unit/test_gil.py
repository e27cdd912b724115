"""The switch interval is short while any pull runs and comes back when the last one ends."""

from __future__ import annotations

import sys
import threading

import pytest

from modelexpress.p2p.pull.gil import PULL_SWITCH_INTERVAL, short_switch_interval


def test_overlapping_pulls_keep_the_interval_short_until_the_last_one_ends() -> None:
    before = sys.getswitchinterval()
    first = short_switch_interval()
    first.__enter__()
    assert sys.getswitchinterval() == pytest.approx(min(PULL_SWITCH_INTERVAL, before), abs=2e-6)
    entered, leave = threading.Event(), threading.Event()

    def other_pull() -> None:
        with short_switch_interval():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other_pull)
    thread.start()
    assert entered.wait(10)
    first.__exit__(None, None, None)  # the first pull ends while the other still runs
    assert sys.getswitchinterval() == pytest.approx(min(PULL_SWITCH_INTERVAL, before), abs=2e-6)
    leave.set()
    thread.join(10)
    assert sys.getswitchinterval() == before


def test_a_shorter_interval_set_by_the_process_is_kept() -> None:
    before = sys.getswitchinterval()
    sys.setswitchinterval(PULL_SWITCH_INTERVAL / 5)
    shorter = sys.getswitchinterval()  # as the interpreter stores it (whole microseconds)
    try:
        with short_switch_interval():
            assert sys.getswitchinterval() == shorter
        assert sys.getswitchinterval() == shorter
    finally:
        sys.setswitchinterval(before)
