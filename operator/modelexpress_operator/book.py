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
        self.dirty_slices.add(self.plan.place(key))
        self.dirty.set()

    def read_back(
        self,
        resource_spec: ModelMetadataSpec,
        generation: int,
        uid: str,
        conditions: list[Condition],
        phase: str | None,
        slices: dict[str, list[WorkerSource]],
        unplaced: list[WorkerSource],
        live: set[str],
    ) -> list[str]:
        """Take what the API held (at start-up): entries of live pods stay, each in its slice (unplaced ones
        anywhere); every slice read is written once more (a dead pod's entry goes, an emptied slice is
        deleted). Entries seen since start-up win. The pod UIDs of the entries kept."""
        self.spec = self.spec or resource_spec
        self.generation, self.uid = max(self.generation, generation), uid
        self.conditions, self.phase = conditions, phase
        self.existing.update(slices)
        for name in slices:
            self.plan.members.setdefault(name, set())
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
                self.dirty_slices.add(self.plan.place(key, known))
                kept.append(uid_of_pod)
        self.loaded = True
        return kept

    def removed(self, key: str) -> None:
        """Entry `key` is gone: its slice needs writing (or deleting, if now empty)."""
        self.sources.pop(key, None)
        name = self.plan.remove(key)
        if name is not None:
            self.dirty_slices.add(name)
        self.dirty.set()


def port_of(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[-1]
