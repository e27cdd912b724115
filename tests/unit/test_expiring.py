"""The expiring map behind a source's token and pod checks: entries live their lifetime, a refusal may
live shorter than an answer, and expired entries do not pile up in a long-lived source."""

from __future__ import annotations

from modelexpress.expiring import ExpiringCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_returned_within_its_lifetime_and_not_after() -> None:
    clock = Clock()
    cache: ExpiringCache[str, str] = ExpiringCache(60, clock)
    cache.put("a", "alice")
    clock.now += 59.9
    assert cache.get("a") == "alice"
    clock.now += 0.1
    assert cache.get("a") is None
    assert cache.get("never") is None


def test_the_lifetime_may_depend_on_the_value() -> None:
    clock = Clock()
    cache: ExpiringCache[str, str | None] = ExpiringCache(lambda v: 60 if v is not None else 5, clock)
    cache.put("ok", "alice")
    cache.put("refused", None)
    clock.now += 6
    assert cache.get("ok") == "alice"
    assert cache.get("refused") is None  # a refusal is asked again soon: the token may have been fixed


def test_expired_entries_are_dropped_as_new_ones_arrive() -> None:
    clock = Clock()
    cache: ExpiringCache[int, int] = ExpiringCache(60, clock)
    for minute in range(24 * 60):  # a day of rotating tokens, one a minute
        cache.put(minute, minute)
        clock.now += 60
    cache.put(-1, -1)
    assert cache.get(-1) == -1 and cache.get(24 * 60 - 1) is None
    assert len(cache) <= 2  # not 1441
