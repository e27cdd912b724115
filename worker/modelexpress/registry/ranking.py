"""Which sources a target pulls from first: the nearest tier of the cluster, the least loaded within it.

Tiers, nearest first: the target's own node; its domain (a rack, an NVLink domain: whatever node
label `MX_DOMAIN` / the operator's `topology.domainLabel` names); its zone
(`topology.kubernetes.io/zone`); elsewhere (including sources whose place is unknown). Within a
tier, sources serving fewer targets come first, and equal ones in random order, so a burst of
targets spreads out. A pull stripes over the first `MX_MAX_SOURCES` of this order that answer, so
it spills to a farther tier only when the nearer ones lack sources, and keeps the rest in reserve.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from modelexpress.p2p.records import SourceRecord

TIERS = ("node", "domain", "zone", "elsewhere")


@dataclass(frozen=True)
class Placement:
    """Where a worker runs, as far as it is known."""

    node: str | None = None
    domain: str | None = None
    zone: str | None = None


def tier(near: Placement, source: SourceRecord) -> int:
    """Index in TIERS of `source` seen from `near` (unknown places are `elsewhere`)."""
    if near.node and source.node == near.node:
        return 0
    if near.domain and source.domain == near.domain and (not near.zone or source.zone in (None, near.zone)):
        return 1
    if near.zone and source.zone == near.zone:
        return 2
    return 3


def rank_sources(
    records: Iterable[SourceRecord], near: Placement | None, rng: random.Random | None = None
) -> list[SourceRecord]:
    """`records` best first: by tier from `near`, then by load, ties in random order."""
    shuffled = list(records)
    (rng or random).shuffle(shuffled)  # the sort is stable: equal candidates stay in random order
    here = near or Placement()
    return sorted(shuffled, key=lambda r: (tier(here, r), r.active_transfers))
