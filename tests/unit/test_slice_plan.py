"""Which slice each source entry lives in: one rank per slice, bounded, packed, stable while the entry lives."""

from __future__ import annotations

from modelexpress_operator.slices import SlicePlan


def test_entries_fill_slices_of_at_most_the_capacity_in_order() -> None:
    plan = SlicePlan("llama", capacity=100)
    placed = [plan.place(f"uid-{i}:50051", 0) for i in range(250)]
    assert placed[:100] == ["llama-r0-s0"] * 100 and placed[100:200] == ["llama-r0-s1"] * 100
    assert placed[200:] == ["llama-r0-s2"] * 50
    assert {name: len(plan.keys(name)) for name in plan.members} == {
        "llama-r0-s0": 100,
        "llama-r0-s1": 100,
        "llama-r0-s2": 50,
    }


def test_an_entry_stays_where_it_is_and_new_ones_go_to_the_fullest_slice_with_room() -> None:
    plan = SlicePlan("m", capacity=4)
    for i in range(8):
        plan.place(f"k{i}", 0)  # m-r0-s0: k0..k3, m-r0-s1: k4..k7
    assert plan.place("k2", 0) == "m-r0-s0"
    plan.remove("k0")
    plan.remove("k4")
    plan.remove("k5")  # m-r0-s0 has 3, m-r0-s1 has 2
    assert plan.place("new", 0) == "m-r0-s0"  # the fullest with room: a burst touches few slices
    assert plan.place("newer", 0) == "m-r0-s1"


def test_an_emptied_slice_is_dropped_and_its_name_used_again() -> None:
    plan = SlicePlan("m", capacity=2)
    for key in ("a", "b", "c"):
        plan.place(key, 0)
    assert plan.remove("c") == "m-r0-s1"
    assert not plan.drop_empty("m-r0-s0") and plan.drop_empty("m-r0-s1")
    assert plan.remove("nothing") is None
    assert plan.place("d", 0) == "m-r0-s1"  # m-r0-s0 is full; the lowest free name


def test_a_known_slice_is_kept_when_it_has_room() -> None:
    plan = SlicePlan("m", capacity=2)
    plan.know("m-r0-s3", 0)
    assert plan.place("a", 0, known="m-r0-s3") == "m-r0-s3"  # read back from the API after a restart
    assert plan.place("b", 0, known="m-r0-s3") == "m-r0-s3"
    assert plan.place("c", 0, known="m-r0-s3") == "m-r0-s0"  # full: elsewhere


def test_each_rank_has_slices_of_its_own_and_a_known_slice_of_another_rank_is_not_used() -> None:
    plan = SlicePlan("m", capacity=100)
    placed = {(rank, plan.place(f"pod-{i}:{50051 + rank}", rank)) for i in range(150) for rank in range(8)}
    assert {name for _, name in placed} == {f"m-r{rank}-s{index}" for rank in range(8) for index in (0, 1)}
    assert all(name.startswith(f"m-r{rank}-") for rank, name in placed)
    assert sorted(len(plan.keys(f"m-r3-s{index}")) for index in (0, 1)) == [50, 100]
    plan.know("m-s0", None)  # read back from before slices held one rank
    assert plan.place("late", 3, known="m-s0") == "m-r3-s1"  # the rank's fullest slice with room
    assert plan.place("later", 5, known="m-r3-s1") == "m-r5-s1"


def test_long_names_stay_within_the_name_limit() -> None:
    plan = SlicePlan("x" * 253)
    assert len(plan.place("a", 0)) == 253


def test_a_shrunk_fleet_gives_up_its_sparsest_slice_when_the_others_have_room() -> None:
    plan = SlicePlan("m", capacity=100)
    for i in range(1000):
        plan.place(f"k{i}", 0)  # 10 full slices
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
        plan.place(f"k{i}", 0)  # m-r0-s0: 100, m-r0-s1: 30
    assert plan.merge_sparse() is None  # 130 entries need both
    for i in range(70):
        plan.remove(f"k{i}")  # 30 and 30: one slice would do, but neither is a quarter full or less
    assert plan.merge_sparse() is None
    for i in range(100, 110):
        plan.remove(f"k{i}")  # m-r0-s1: 20
    assert plan.merge_sparse() == ("m-r0-s1", {"m-r0-s0"})
    for i in range(110, 130):
        plan.remove(f"k{i}")
    assert plan.merge_sparse() is None  # an empty slice is deleted by its write, not merged


def test_the_selector_of_a_long_name_is_a_valid_label_value() -> None:
    from modelexpress.api.modelsourceslice import metadata_selector

    label, value = metadata_selector("a" * 62 + "-" + "b" * 100).split("=")
    assert label == "modelexpress.io/model-metadata" and value == "a" * 62  # 63 at most, ending alphanumeric


def test_slices_merge_only_within_their_rank() -> None:
    plan = SlicePlan("m", capacity=100)
    for rank in (0, 1):
        for i in range(120):
            plan.place(f"k{rank}-{i}", rank)  # each rank: 100 + 20
    for i in range(60):
        plan.remove(f"k0-{i}")  # rank 0: 40 + 20 = one slice's worth in two
    assert plan.merge_sparse() == ("m-r0-s1", {"m-r0-s0"})
    assert plan.drop_empty("m-r0-s1")
    assert plan.merge_sparse() is None  # rank 1's two slices are both needed
    assert {name for name in plan.members} == {"m-r0-s0", "m-r1-s0", "m-r1-s1"}
