"""Which slice each of a model's source entries lives in (pure book-keeping, no API calls).

An entry is placed once, when its worker is first seen, in the fullest slice that has room (so a
burst of new workers lands in few slices and a fleet needs about entries/100 of them), or in a new
slice; it stays there while its worker lives, so a change of one worker rewrites one slice. A slice
left empty is deleted. After churn, a model holding more slices than its entries need gives up its
sparsest slice (a quarter full or less) when the others have room for its entries: they move, one
slice per round of writes, so a shrinking fleet's slices are merged without a burst of moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelexpress.api.modelsourceslice import MAX_SLICE_SOURCES, slice_name


@dataclass
class SlicePlan:
    """The slices of one ModelMetadata and the entries (by key) each holds."""

    metadata_name: str
    capacity: int = MAX_SLICE_SOURCES
    slice_of: dict[str, str] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)

    def place(self, key: str, known: str | None = None) -> str:
        """The slice of entry `key`: where it is, else `known` (read back from the API) when that has
        room, else the fullest slice with room, else a new one."""
        current = self.slice_of.get(key)
        if current is not None:
            return current
        if known is None or len(self.members.get(known, ())) >= self.capacity:
            roomy = [(len(keys), name) for name, keys in self.members.items() if len(keys) < self.capacity]
            known = max(roomy)[1] if roomy else self._new_name()
        self.slice_of[key] = known
        self.members.setdefault(known, set()).add(key)
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
        return True

    def merge_sparse(self) -> tuple[str, set[str]] | None:
        """Empty the sparsest slice into the others when the model holds more slices than its entries
        need, that slice is at most a quarter full and the others have room: (its name, the slices that
        took its entries); None when nothing is worth moving."""
        total = len(self.slice_of)
        needed = -(-total // self.capacity)
        if len(self.members) <= max(needed, 1):
            return None
        count, sparsest = min((len(keys), name) for name, keys in self.members.items())
        room = sum(self.capacity - len(keys) for name, keys in self.members.items() if name != sparsest)
        if count == 0 or count > self.capacity // 4 or room < count:
            return None  # an empty slice is deleted by its own write
        receivers: set[str] = set()
        for key in sorted(self.members[sparsest]):
            self.members[sparsest].discard(key)
            roomy = [(len(keys), name) for name, keys in self.members.items()
                     if name != sparsest and len(keys) < self.capacity]  # fmt: skip
            target = max(roomy)[1]
            self.members[target].add(key)
            self.slice_of[key] = target
            receivers.add(target)
        return sparsest, receivers

    def keys(self, name: str) -> set[str]:
        return set(self.members.get(name, ()))

    def _new_name(self) -> str:
        index = 0
        while slice_name(self.metadata_name, index) in self.members:
            index += 1
        return slice_name(self.metadata_name, index)
