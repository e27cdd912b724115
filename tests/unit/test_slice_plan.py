"""Which slice each source entry lives in: bounded, packed, and stable while the entry lives."""

from __future__ import annotations

from modelexpress_operator.slices import SlicePlan


def test_entries_fill_slices_of_at_most_the_capacity_in_order() -> None:
    plan = SlicePlan("llama", capacity=100)
    placed = [plan.place(f"uid-{i}:50051") for i in range(250)]
    assert placed[:100] == ["llama-s0"] * 100 and placed[100:200] == ["llama-s1"] * 100
    assert placed[200:] == ["llama-s2"] * 50
    assert {name: len(plan.keys(name)) for name in plan.members} == {"llama-s0": 100, "llama-s1": 100, "llama-s2": 50}


def test_an_entry_stays_where_it_is_and_new_ones_go_to_the_fullest_slice_with_room() -> None:
    plan = SlicePlan("m", capacity=4)
    for i in range(8):
        plan.place(f"k{i}")  # m-s0: k0..k3, m-s1: k4..k7
    assert plan.place("k2") == "m-s0"
    plan.remove("k0")
    plan.remove("k4")
    plan.remove("k5")  # m-s0 has 3, m-s1 has 2
    assert plan.place("new") == "m-s0"  # the fullest with room: a burst touches few slices
    assert plan.place("newer") == "m-s1"


def test_an_emptied_slice_is_dropped_and_its_name_used_again() -> None:
    plan = SlicePlan("m", capacity=2)
    for key in ("a", "b", "c"):
        plan.place(key)
    assert plan.remove("c") == "m-s1"
    assert not plan.drop_empty("m-s0") and plan.drop_empty("m-s1")
    assert plan.remove("nothing") is None
    assert plan.place("d") == "m-s1"  # m-s0 is full; the lowest free name


def test_a_known_slice_is_kept_when_it_has_room() -> None:
    plan = SlicePlan("m", capacity=2)
    assert plan.place("a", known="m-s3") == "m-s3"  # read back from the API after a restart
    assert plan.place("b", known="m-s3") == "m-s3"
    assert plan.place("c", known="m-s3") == "m-s0"  # full: elsewhere


def test_long_names_stay_within_the_name_limit() -> None:
    plan = SlicePlan("x" * 253)
    assert len(plan.place("a")) == 253
