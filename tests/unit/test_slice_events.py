"""Which watch events of a model's slices make the operator write (or delete) a slice, and which do not."""

from __future__ import annotations

from modelexpress_operator.book import Book, SliceWrite


def loaded_book() -> Book:
    """A book whose slice m-r0-s0 holds two entries, last written at resourceVersion 100 with `{"n": 2}`."""
    book = Book("ns", "m")
    book.loaded = True
    book.plan.place("a:1", 0)
    book.plan.place("b:1", 0)
    book.existing.add("m-r0-s0")
    book.written["m-r0-s0"] = SliceWrite(100, {"n": 2})
    return book


def test_its_own_writes_and_older_events_ask_nothing() -> None:
    book = loaded_book()
    assert book.slice_event("m-r0-s0", False, 100, {"n": 2}) is None
    assert book.slice_event("m-r0-s0", False, 99, {"n": 1}) is None  # older than the last write
    assert book.slice_event("m-r0-s0", True, 90, None) is None  # a deletion before the slice was made again
    assert not book.dirty_slices and not book.dirty.is_set()


def test_a_newer_event_with_the_same_entries_asks_nothing() -> None:
    book = loaded_book()
    assert book.slice_event("m-r0-s0", False, 101, {"n": 2}) is None  # e.g. someone labelled it


def test_a_slice_deleted_or_edited_by_someone_else_is_written_again() -> None:
    book = loaded_book()
    assert book.slice_event("m-r0-s0", True, 105, {"n": 2}) == "deleted while it holds 2 entries: writing it again"
    assert book.dirty_slices == {"m-r0-s0"} and "m-r0-s0" not in book.existing and book.dirty.is_set()
    book = loaded_book()
    assert book.slice_event("m-r0-s0", False, 105, {"n": 1}) == "changed by someone else: writing it again as recorded"
    assert book.dirty_slices == {"m-r0-s0"}


def test_a_slice_the_operator_never_placed_anything_in_is_deleted() -> None:
    book = loaded_book()
    assert book.slice_event("m-r0-s7", False, 5, {"n": 1}) == "holds nothing the operator placed there: deleting it"
    assert "m-r0-s7" in book.dirty_slices and "m-r0-s7" in book.existing  # written empty: deleted
    assert book.slice_event("m-r0-s8", True, 5, None) is None  # deleted already


def test_nothing_before_the_book_is_loaded_or_while_the_slice_is_written_anyway() -> None:
    book = loaded_book()
    book.writing.add("m-r0-s0")
    assert book.slice_event("m-r0-s0", True, 105, None) is None  # the write in flight replaces it
    book.writing.clear()
    book.dirty_slices.add("m-r0-s0")
    assert book.slice_event("m-r0-s0", False, 105, {}) is None
    book = loaded_book()
    book.loaded = False  # its first write reads every slice back
    assert book.slice_event("m-r0-s7", False, 5, {}) is None and not book.dirty_slices


def test_an_emptied_slice_being_deleted_by_the_operator_asks_nothing() -> None:
    book = loaded_book()
    book.plan.remove("a:1")
    book.plan.remove("b:1")
    assert book.slice_event("m-r0-s0", True, 105, None) is None
