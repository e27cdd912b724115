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


def test_a_shrunk_fleet_gives_up_its_sparsest_slice_when_the_others_have_room() -> None:
    plan = SlicePlan("m", capacity=100)
    for i in range(1000):
        plan.place(f"k{i}")  # 10 full slices
    for i in range(1000):
        if i % 100 >= 20:
            plan.remove(f"k{i}")  # 20 left in each: 200 entries in 10 slices, 2 would do
    moves = 0
    while (merged := plan.merge_sparse()) is not None:
        emptied, receivers = merged
        assert not plan.keys(emptied) and emptied not in receivers
        assert plan.drop_empty(emptied)
        moves += 1
    assert moves == 8 and len(plan.members) == 2
    assert sorted(len(plan.keys(name)) for name in plan.members) == [100, 100]
    assert {plan.slice_of[f"k{i}"] for i in range(1000) if i % 100 < 20} == set(plan.members)


def test_nothing_moves_while_the_slices_are_needed_or_fuller_than_a_quarter() -> None:
    plan = SlicePlan("m", capacity=100)
    for i in range(130):
        plan.place(f"k{i}")  # m-s0: 100, m-s1: 30
    assert plan.merge_sparse() is None  # 130 entries need both
    for i in range(70):
        plan.remove(f"k{i}")  # 30 and 30: one slice would do, but neither is a quarter full or less
    assert plan.merge_sparse() is None
    for i in range(100, 110):
        plan.remove(f"k{i}")  # m-s1: 20
    assert plan.merge_sparse() == ("m-s1", {"m-s0"})
    for i in range(110, 130):
        plan.remove(f"k{i}")
    assert plan.merge_sparse() is None  # an empty slice is deleted by its write, not merged


def test_the_selector_of_a_long_name_is_a_valid_label_value() -> None:
    from modelexpress.api.modelsourceslice import metadata_selector

    label, value = metadata_selector("a" * 62 + "-" + "b" * 100).split("=")
    assert label == "modelexpress.io/model-metadata" and value == "a" * 62  # 63 at most, ending alphanumeric
