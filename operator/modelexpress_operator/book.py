"""What the operator knows of one ModelMetadata: its spec, its source entries and which slice holds each.

The recorder changes a book from worker observations (always on the event loop); the source store
reads and writes the book's objects. The book remembers what needs writing (its dirty slices, and
whether the summary changed since the last write) so that a burst of changes is written once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from modelexpress.api import ModelMetadataSpec, WorkerSource
from modelexpress.api.common import Condition
from modelexpress_operator.slices import SlicePlan

BookKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class SliceWrite:
    """What one write left in a slice: its resourceVersion (None when unreadable) and its status."""

    resource_version: int | None
    status: dict[str, Any]

    def covers(self, version: int | None) -> bool:
        """An event of `version` is this write's own, or older (so nothing in it is news)."""
        return version is not None and self.resource_version is not None and version <= self.resource_version


def resource_version(obj: dict[str, Any] | None) -> int | None:
    """An object's resourceVersion as a number. Kubernetes calls it opaque, but every API server hands out
    etcd's revisions, which only grow: comparing them tells an event older than a write from a newer one.
    None when it is not a number (then nothing is inferred from it)."""
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


@dataclass
class Book:
    """What the operator knows of one ModelMetadata."""

    namespace: str
    name: str
    spec: ModelMetadataSpec | None = None
    generation: int = 0
    uid: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    sources: dict[str, WorkerSource] = field(default_factory=dict)
    removed_pods: set[str] = field(default_factory=set)
    loaded: bool = False
    phase: str | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    plan: SlicePlan = field(init=False)
    dirty_slices: set[str] = field(default_factory=set)
    existing: set[str] = field(default_factory=set)
    """Slices known to exist in the API (read at load, or created since)."""
    writing: set[str] = field(default_factory=set)
    """Slices being written now (their watch events are the writes' own, or overwritten by them)."""
    written: dict[str, SliceWrite] = field(default_factory=dict)
    """What the last write of each slice left there (to tell a change made by someone else from ours)."""
    summary: dict[str, Any] | None = None
    """The summary status last written (an equal one is not written again)."""
    summary_behind: float | None = None
    """Since when (monotonic) a changed summary has waited for slices to be written first."""

    def __post_init__(self) -> None:
        self.plan = SlicePlan(self.name)

    @property
    def key(self) -> BookKey:
        return (self.namespace, self.name)

    def changed(self, key: str) -> None:
        """Entry `key` was added or changed: its slice needs writing."""
        self.dirty_slices.add(self.plan.place(key, self.sources[key].rank))
        self.dirty.set()

    def read_back(
        self,
        resource_spec: ModelMetadataSpec,
        generation: int,
        uid: str,
        conditions: list[Condition],
        phase: str | None,
        slices: dict[str, list[WorkerSource]],
        ranks: dict[str, int | None],
        unplaced: list[WorkerSource],
        live: set[str],
    ) -> list[str]:
        """Take what the API held (at start-up): entries of live pods stay, each in its slice if that holds
        their rank (others, and unplaced ones, go to a slice of their rank); every slice read is written
        once more (a dead pod's entry goes, an emptied slice is deleted). Entries seen since start-up win.
        The pod UIDs of the entries kept."""
        self.spec = self.spec or resource_spec
        self.generation, self.uid = max(self.generation, generation), uid
        self.conditions, self.phase = conditions, phase
        self.existing.update(slices)
        for name in slices:
            self.plan.know(name, ranks.get(name))
            self.dirty_slices.add(name)
        kept = []
        recorded = [(e, name) for name, entries in slices.items() for e in entries] + [(e, None) for e in unplaced]
        for entry, known in recorded:
            uid_of_pod = entry.pod_uid
            if uid_of_pod is None or uid_of_pod not in live or uid_of_pod in self.removed_pods:
                continue
            key = f"{uid_of_pod}:{port_of(entry.endpoint)}"
            if key not in self.sources:
                self.sources[key] = entry
                self.dirty_slices.add(self.plan.place(key, entry.rank, known))
                kept.append(uid_of_pod)
        self.loaded = True
        return kept

    def slice_event(self, name: str, deleted: bool, version: int | None, status: Any) -> str | None:
        """A watch event of slice `name`. Level-triggered, as the EndpointSlice controller is: a slice that
        someone else deleted or edited is to be written again as the book holds it, and a slice of this
        model that the book never placed anything in is to be deleted. Why it is to be written, or None
        when the event asks nothing (it is our own write's, or older, or the slice is written anyway)."""
        if not self.loaded or name in self.dirty_slices or name in self.writing:
            return None  # read back at the first write, or written (over the change) anyway
        last = self.written.get(name)
        if last is not None and last.covers(version):
            return None  # our own write's event, or an older one
        holds = len(self.plan.members.get(name, ()))
        if name not in self.plan.members:
            if deleted:
                return None
            self.existing.add(name)  # so that writing it with no entries deletes it
            reason = "holds nothing the operator placed there: deleting it"
        elif holds == 0 or (not deleted and last is not None and status == last.status):
            return None  # emptied (its deletion is ours), or changed in nothing the workers read
        elif deleted:
            self.existing.discard(name)
            reason = f"deleted while it holds {holds} entries: writing it again"
        else:
            reason = "changed by someone else: writing it again as recorded"
        self.dirty_slices.add(name)
        self.dirty.set()
        return reason

    def removed(self, key: str) -> None:
        """Entry `key` is gone: its slice needs writing (or deleting, if now empty)."""
        self.sources.pop(key, None)
        name = self.plan.remove(key)
        if name is not None:
            self.dirty_slices.add(name)
        self.dirty.set()


def port_of(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[-1]
