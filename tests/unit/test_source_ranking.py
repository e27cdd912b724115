"""Source ranking: nearest tier first (node, domain, zone, elsewhere), then least loaded, ties at random."""

from __future__ import annotations

import random
from collections import Counter

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.records import SourceRecord
from modelexpress.registry.ranking import TIERS, Placement, rank_sources, tier

ID = WorkerIdentity(model_name="org/m")
HERE = Placement(node="n1", domain="rack-a", zone="z1")


def _src(
    name: str, node: str | None = None, domain: str | None = None, zone: str | None = None, load: int = 0
) -> SourceRecord:
    return SourceRecord(worker_id=name, identity=ID, endpoint=f"{name}:1", agent_name=name, state="Ready", node=node,
                        domain=domain, zone=zone, active_transfers=load)  # fmt: skip


def test_tiers_from_node_labels() -> None:
    assert TIERS[tier(HERE, _src("a", node="n1"))] == "node"
    assert TIERS[tier(HERE, _src("b", node="n2", domain="rack-a", zone="z1"))] == "domain"
    assert TIERS[tier(HERE, _src("c", node="n3", domain="rack-b", zone="z1"))] == "zone"
    assert TIERS[tier(HERE, _src("d", node="n4", domain="rack-a", zone="z2"))] == "elsewhere"  # same name, other zone
    assert TIERS[tier(HERE, _src("e", node="n5"))] == "elsewhere"  # place unknown
    assert TIERS[tier(Placement(), _src("f", node="n1", zone="z1"))] == "elsewhere"  # target's place unknown


def test_nearest_tier_first_then_least_loaded() -> None:
    sources = [
        _src("far", node="n9", zone="z2"),
        _src("zone-busy", node="n3", zone="z1", load=3),
        _src("zone-idle", node="n4", zone="z1"),
        _src("rack", node="n2", domain="rack-a", zone="z1", load=5),
        _src("node", node="n1", load=9),
    ]
    order = [r.worker_id for r in rank_sources(sources, HERE, random.Random(1))]
    assert order == ["node", "rack", "zone-idle", "zone-busy", "far"]


def test_equal_candidates_are_spread_at_random() -> None:
    sources = [_src(f"s{i}", node=f"m{i}", zone="z1") for i in range(4)]
    firsts = Counter(rank_sources(sources, HERE, random.Random(seed))[0].worker_id for seed in range(400))
    assert set(firsts) == {"s0", "s1", "s2", "s3"} and min(firsts.values()) > 60


def test_no_placement_keeps_load_order() -> None:
    sources = [_src("b", load=2), _src("a", load=0)]
    assert [r.worker_id for r in rank_sources(sources, None)] == ["a", "b"]


def test_a_stripe_spills_into_the_next_tier_only_for_what_the_nearest_lacks() -> None:
    """The pull stripes over the first MX_MAX_SOURCES of this order: 1 in the domain, so 3 from the zone,
    and nothing from another zone while the zone has enough."""
    sources = [_src(f"far{i}", node=f"f{i}", zone="z2") for i in range(4)]
    sources += [_src(f"zone{i}", node=f"z{i}", domain="rack-b", zone="z1") for i in range(5)]
    sources += [_src("rack0", node="r0", domain="rack-a", zone="z1")]
    stripe = [r.worker_id for r in rank_sources(sources, HERE, random.Random(3))[:4]]
    assert stripe[0] == "rack0" and all(name.startswith("zone") for name in stripe[1:])
