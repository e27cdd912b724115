"""The "pulled N bytes" notice a target sends a source after a pull."""

from __future__ import annotations

from modelexpress.p2p.notices import parse_pulled, pulled


def test_pulled_notice_round_trips() -> None:
    assert parse_pulled(pulled(0)) == 0
    assert parse_pulled(pulled(123456789012)) == 123456789012


def test_other_messages_are_not_pulls() -> None:
    for message in (b"", b"mx-read:12", b"mx-pulled:", b"mx-pulled:-1", b"mx-pulled:12x", b"kv-done:3"):
        assert parse_pulled(message) is None, message
