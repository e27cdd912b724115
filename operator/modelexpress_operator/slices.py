"""Which slice each of a model's source entries lives in (pure book-keeping, no API calls).

A slice holds entries of one rank (a worker reads only its own rank's slices: a TP8 worker of a
10,000-rank fleet reads an eighth of them). An entry is placed once, when its worker is first seen, in
the fullest slice of its rank that has room (so a burst of new workers lands in few slices and a rank
needs about entries/100 of them), or in a new slice; it stays there while its worker lives, so a change
of one worker rewrites one slice. A slice left empty is deleted. After churn, a rank holding more
slices than its entries need gives up its sparsest slice (a quarter full or less) when its other slices
have room for the entries: they move, one slice per round of writes, so a shrinking fleet's slices are
merged without a burst of moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelexpress.api.modelsourceslice import MAX_SLICE_SOURCES, slice_name


@dataclass
class SlicePlan:
    """The slices of one ModelMetadata, the rank each holds and the entries (by key) in each."""

    metadata_name: str
    capacity: int = MAX_SLICE_SOURCES
    slice_of: dict[str, str] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    rank_of: dict[str, int | None] = field(default_factory=dict)
    """The rank of each slice's entries (None: a slice read back from before slices held one rank; nothing
    is placed there, and it is deleted once emptied)."""

    def know(self, name: str, rank: int | None) -> None:
        """Slice `name`, of rank `rank`, exists (read back from the API)."""
        self.members.setdefault(name, set())
        self.rank_of.setdefault(name, rank)

    def place(self, key: str, rank: int, known: str | None = None) -> str:
        """The slice of entry `key` of rank `rank`: where it is, else `known` (read back from the API) when
        that slice is of the rank and has room, else the rank's fullest slice with room, else a new one."""
        current = self.slice_of.get(key)
        if current is not None:
            return current
        if known is None or self.rank_of.get(known) != rank or len(self.members.get(known, ())) >= self.capacity:
            roomy = [(len(keys), name) for name, keys in self.members.items()
                     if self.rank_of.get(name) == rank and len(keys) < self.capacity]  # fmt: skip
            known = max(roomy)[1] if roomy else self._new_name(rank)
        self.slice_of[key] = known
        self.members.setdefault(known, set()).add(key)
        self.rank_of.setdefault(known, rank)
        return known

    def remove(self, key: str) -> str | None:
        """Take `key` out of its slice; the slice's name (None when it had none)."""
        name = self.slice_of.pop(key, None)
        if name is not None:
            self.members[name].discard(key)
        return name

    def drop_empty(self, name: str) -> bool:
        """Forget slice `name` if it holds nothing; True when it did (the caller deletes it)."""
        if self.members.get(name):
            return False
        self.members.pop(name, None)
        self.rank_of.pop(name, None)
        return True

    def merge_sparse(self) -> tuple[str, set[str]] | None:
        """Empty the sparsest slice of a rank into the rank's others when the rank holds more slices than its
        entries need, that slice is at most a quarter full and the others have room: (its name, the slices
        that took its entries); None when nothing is worth moving."""
        for rank in sorted({r for r in self.rank_of.values() if r is not None}):
            merged = self._merge_rank(rank)
            if merged is not None:
                return merged
        return None

    def _merge_rank(self, rank: int) -> tuple[str, set[str]] | None:
        slices = {name: keys for name, keys in self.members.items() if self.rank_of.get(name) == rank}
        total = sum(len(keys) for keys in slices.values())
        needed = -(-total // self.capacity)
        if len(slices) <= max(needed, 1):
            return None
        count, sparsest = min((len(keys), name) for name, keys in slices.items())
        room = sum(self.capacity - len(keys) for name, keys in slices.items() if name != sparsest)
        if count == 0 or count > self.capacity // 4 or room < count:
            return None  # an empty slice is deleted by its own write
        receivers: set[str] = set()
        for key in sorted(slices[sparsest]):
            slices[sparsest].discard(key)
            roomy = [(len(keys), name) for name, keys in slices.items()
                     if name != sparsest and len(keys) < self.capacity]  # fmt: skip
            target = max(roomy)[1]
            slices[target].add(key)
            self.slice_of[key] = target
            receivers.add(target)
        return sparsest, receivers

    def keys(self, name: str) -> set[str]:
        return set(self.members.get(name, ()))

    def _new_name(self, rank: int) -> str:
        index = 0
        while slice_name(self.metadata_name, rank, index) in self.members:
            index += 1
        return slice_name(self.metadata_name, rank, index)
