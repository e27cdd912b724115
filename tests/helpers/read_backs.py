"""Counting the batched `row-sum-64`'s read-backs from the device (one host sync per batch of verdicts)."""

from __future__ import annotations

import numpy
import pytest

from modelexpress.p2p.checksum import RowSums


def count_read_backs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, each read-back of a batch's totals appends the batch's size to the list returned."""
    batches: list[int] = []
    original = RowSums.totals_at

    def counted(self: RowSums, index: numpy.ndarray) -> numpy.ndarray:
        batches.append(len(index))
        return original(self, index)

    monkeypatch.setattr(RowSums, "totals_at", counted)
    return batches
