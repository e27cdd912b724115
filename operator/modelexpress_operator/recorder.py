"""The single writer of a model's source entries (its ModelSourceSlices) and of its ModelMetadata's summary.

Worker watchers report observations (a status message, a silence, a pod gone); the recorder applies
them to an in-memory book per ModelMetadata and marks the slices they touch dirty. Each book has one
writer task, so writes to one object never race: every change that arrives while a write is in
flight is carried by the next write (one PATCH per touched slice for a burst of workers, not one per
worker). A change of one worker rewrites its slice (at most 100 entries), and the ModelMetadata's
summary only when the summary changed. Entries are keyed by pod UID and port, so a pod replaced
under the same name is a different entry; an entry stays in the slice it was first put in
(`slices.SlicePlan`). The API calls themselves are `sourcestore.SourceStore`'s.

The first write after start-up loads the resource and its slices and keeps the recorded entries only
of pods that still exist, are opted in and Ready: a restarted operator loses nothing and keeps nothing
stale. Entries that a release before slices left in `status.sources` are moved into slices, which are
written before the list is emptied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from kubernetes import client

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.api import ModelMetadataSpec, SourceState, WorkerSource
from modelexpress.api.common import Condition
from modelexpress.api.modelmetadata import ModelIdentity, ModelMetadata
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress_operator.book import Book, BookKey, SliceWrite, resource_version
from modelexpress_operator.events import post_event
from modelexpress_operator.metrics import (
    ERRORS,
    RECONCILE_SECONDS,
    RECONCILES,
    forget_sources,
    show_sources,
)
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.sourcestore import SourceStore
from modelexpress_operator.status import metadata_status
from modelexpress_operator.topology import Topology
from modelexpress_operator.workers import WorkerTarget, same_entry, source_entry

log = logging.getLogger(__name__)
PLURAL = ModelMetadata.PLURAL
SLICE_WRITERS = 8
SUMMARY_DELAY = 1.0
"""Seconds a changed summary may wait while slices keep changing (a burst's slices are written first)."""


class Leadership(Protocol):
    @property
    def active(self) -> bool: ...


class Recorder:
    """Applies worker observations to ModelMetadata status; one writer task per resource."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: OperatorSettings,
        leadership: Leadership,
        topology: Topology | None = None,
    ) -> None:
        self.api = api
        self.topology = topology or Topology(api, settings)
        self.store = SourceStore(api, settings)
        self.settings = settings
        self.leadership = leadership
        self.books: dict[BookKey, Book] = {}
        self._by_pod: dict[str, set[BookKey]] = {}
        self._names: dict[tuple[str, str], str] = {}  # (namespace, identity hash) -> resource name
        self._resolving: dict[tuple[str, str], asyncio.Lock] = {}
        self._identities: dict[bytes, tuple[ModelIdentity, str]] = {}
        # Slice writes in flight at once: the API server (etcd batching its fsyncs) takes several faster
        # than one after another (8 writers: 58 writes/s of full slices against 33 for one, 2 cores).
        self._slice_writers = ThreadPoolExecutor(SLICE_WRITERS, thread_name_prefix="mx-slice-write")

    # --- observations from watchers and pod events ----------------------------------------------

    async def observe(self, target: WorkerTarget, status: worker_pb2.WorkerStatus) -> None:
        """A worker's latest status: record it in its identity's ModelMetadata."""
        identity, digest = self._identity(status.identity)
        name = await self.resolve(target, identity, digest)
        if name is None:
            return
        known, place = self.topology.cached(target.node)
        if not known:  # a read per node every few minutes, off the event loop
            place = await asyncio.to_thread(self.topology.of, target.node)
        self._put(self._book(target.namespace, name), target, source_entry(target, status, place=place))

    def _identity(self, message: worker_pb2.WorkerIdentity) -> tuple[ModelIdentity, str]:
        """The model identity a status message reports and its hash, parsed once per distinct identity (a
        fleet reports few; 10,000 ranks' messages would otherwise cost a quarter of a second to parse)."""
        raw = message.SerializeToString(deterministic=True)
        found = self._identities.get(raw)
        if found is None:
            if len(self._identities) >= 4096:  # bounded: identities are few, but never let it grow without end
                self._identities.clear()
            identity = ModelIdentity.of(WorkerIdentity.from_proto(message))
            found = self._identities[raw] = (identity, identity.identity_hash())
        return found

    def stale(self, target: WorkerTarget) -> None:
        """The worker has not been heard from for the TTL: keep its entry but never as Ready."""
        for key in self._by_pod.get(target.uid, set()):
            book = self.books.get(key)
            entry = book.sources.get(target.key) if book else None
            if book is not None and entry is not None and entry.state != SourceState.STALE:
                self._put(book, target, entry.model_copy(update={"state": SourceState.STALE}))
                log.warning(
                    "worker %s (pod %s) silent for %.0fs: Stale",
                    target.endpoint,
                    target.pod,
                    self.settings.status_ttl_secs,
                )

    def forget_pod(self, uid: str) -> None:
        """The pod is gone or no longer Ready: drop every entry of it, now."""
        for key in self._by_pod.pop(uid, set()):
            book = self.books.get(key)
            if book is None:
                continue
            book.removed_pods.add(uid)
            for k in [k for k, entry in book.sources.items() if entry.pod_uid == uid]:
                book.removed(k)

    def forget_target(self, target: WorkerTarget) -> None:
        """One worker of a pod is no longer followed (its pod now runs fewer ranks)."""
        for key in self._by_pod.get(target.uid, set()):
            book = self.books.get(key)
            if book is not None and target.key in book.sources:
                book.removed(target.key)

    def slice_event(self, namespace: str, body: dict[str, Any], deleted: bool) -> None:
        """A watch event of one of the slices: one deleted or edited behind the operator's back is written
        again (a stable Ready worker's entry would otherwise stay missing until its next change)."""
        metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
        owner, name = spec.get("modelMetadata"), metadata.get("name")
        book = self.books.get((namespace, owner)) if isinstance(owner, str) else None
        if book is None or not isinstance(name, str):
            return  # no worker of it seen since start-up: its first write reads every slice back
        status = body.get("status")
        reason = book.slice_event(name, deleted, resource_version(body), status)
        if reason is not None:
            log.info("ModelSourceSlice %s/%s %s", namespace, name, reason)

    def _put(self, book: Book, target: WorkerTarget, entry: WorkerSource) -> None:
        current = book.sources.get(target.key)
        if current is not None and same_entry(current, entry):
            return
        book.sources[target.key] = entry
        book.removed_pods.discard(target.uid)
        self._by_pod.setdefault(target.uid, set()).add(book.key)
        book.changed(target.key)

    # --- resources: resolution, spec changes, deletion ------------------------------------------

    async def resolve(self, target: WorkerTarget, identity: ModelIdentity, digest: str | None = None) -> str | None:
        """The ModelMetadata to record `identity` in: the pod's pinned one, one with that spec, or a new one."""
        if target.metadata_name:
            return target.metadata_name
        digest = digest or identity.identity_hash()
        cache_key = (target.namespace, digest)
        if (name := self._names.get(cache_key)) is not None:
            return name
        lock = self._resolving.setdefault(cache_key, asyncio.Lock())
        async with lock:  # 64 workers of one new identity create one resource, not 64
            if (known := self._names.get(cache_key)) is not None:
                return known
            found, created = await asyncio.to_thread(self.store.find_or_create, target.namespace, identity)
            if created is not None:
                self._created_for(target.namespace, found, created["metadata"]["uid"], identity)
            self._names[cache_key] = found
        return found

    def _created_for(self, namespace: str, name: str, uid: str, identity: ModelIdentity) -> None:
        message = f"created for the workers of {identity.model_name} ({identity.layout}) that opted in"
        post_event(self.api, SourceStore.ref(namespace, name, uid), "Normal", "CreatedForWorker", message)
        log.info("created ModelMetadata %s/%s for %s", namespace, name, identity.model_name)

    @property
    def writes(self) -> int:
        """API writes made so far (summaries, slices created, patched and deleted)."""
        return self.store.writes

    def spec_changed(self, namespace: str, name: str, spec: ModelMetadataSpec, generation: int, uid: str) -> None:
        """The resource was created, resumed or its spec edited: re-derive the status from it."""
        book = self._book(namespace, name)
        digest = ModelIdentity.of(spec).identity_hash()
        if book.spec is not None and ModelIdentity.of(book.spec).identity_hash() != digest:
            # Another identity now: the recorded workers no longer match it; they are re-resolved.
            self._drop_entries(book)
            self._names = {k: v for k, v in self._names.items() if not (k[0] == namespace and v == name)}
        book.spec, book.generation, book.uid = spec, generation, uid
        self._names.setdefault((namespace, digest), name)
        self._show_sources(book)  # a model with none shows 0
        book.dirty.set()

    def resource_deleted(self, namespace: str, name: str) -> None:
        book = self.books.pop((namespace, name), None)
        forget_sources(namespace, name)
        if book is not None:
            self._drop_entries(book)
            if book.task is not None:
                book.task.cancel()
        self._names = {k: v for k, v in self._names.items() if not (k[0] == namespace and v == name)}

    def _drop_entries(self, book: Book) -> None:
        for key, entry in list(book.sources.items()):
            if entry.pod_uid and (keys := self._by_pod.get(entry.pod_uid)) is not None:
                keys.discard(book.key)
            book.removed(key)

    async def close(self) -> None:
        """Stop every writer (leadership lost, or shutdown); the next leader rebuilds from the pods."""
        tasks = [b.task for b in self.books.values() if b.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.books.clear()
        self._by_pod.clear()
        self._names.clear()
        self._identities.clear()

    # --- the writer ----------------------------------------------------------------------------

    def _book(self, namespace: str, name: str) -> Book:
        key = (namespace, name)
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = Book(namespace, name)
            book.task = asyncio.get_running_loop().create_task(self._write_loop(book), name=f"mx-record-{name}")
        return book

    async def _write_loop(self, book: Book) -> None:
        backoff = 0.2
        while True:
            await book.dirty.wait()
            while not self.leadership.active:
                # kopf resumes a new leader's watches a moment before our peering poll agrees;
                # hold the change until it does (losing leadership cancels this task instead).
                await asyncio.sleep(0.2)
            book.dirty.clear()
            started = time.perf_counter()
            try:
                if not book.loaded:
                    await self._read_back(book)
                written = await self._write_slices(book)
                written = await self._merge_sparse(book) or written
                status = self._status_of(book, written)
                if not await self._write_summary(book, status):
                    continue  # more changes came in while the slices were written: they go first
            except client.ApiException as exc:
                if exc.status == 404 and await self._recreate(book):
                    continue
                if exc.status == 404:
                    log.info("ModelMetadata %s/%s is gone and no worker needs it", book.namespace, book.name)
                    self.resource_deleted(book.namespace, book.name)
                    return
                await self._retry_later(book, exc, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            except Exception as exc:
                await self._retry_later(book, exc, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.2
            RECONCILES.labels(PLURAL, "ok").inc()
            RECONCILE_SECONDS.labels(PLURAL).observe(time.perf_counter() - started)
            self._announce(book, status)
            self._show_sources(book)

    async def _write_slices(self, book: Book) -> list[WorkerSource]:
        """Write every dirty slice (at once: each is its own object), delete those left empty; the entries
        as written, every slice included (what the summary may count: changes that arrive during the
        writes are in neither until the next round)."""
        dirty, book.dirty_slices = book.dirty_slices, set()
        written = list(book.sources.values())
        if not dirty:
            return written
        contents = {name: [book.sources[k] for k in book.plan.keys(name) if k in book.sources] for name in dirty}
        loop = asyncio.get_running_loop()
        book.writing.update(contents)
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(self._slice_writers, self.store.write_slice, book, name, entries)
                  for name, entries in contents.items()),
                return_exceptions=True,
            )  # fmt: skip
        finally:
            book.writing.difference_update(contents)
        failures = [(name, r) for name, r in zip(contents, results, strict=True) if isinstance(r, BaseException)]
        for (name, entries), result in zip(contents.items(), results, strict=True):
            if isinstance(result, SliceWrite):
                book.written[name] = result
            elif not entries and not isinstance(result, BaseException):
                book.existing.discard(name)
                book.written.pop(name, None)
                if not book.plan.drop_empty(name):  # refilled while it was being deleted
                    book.dirty_slices.add(name)
        if failures:
            book.dirty_slices.update(name for name, _ in failures)
            raise failures[0][1]
        return written

    async def _write_summary(self, book: Book, status: dict[str, Any]) -> bool:
        """Write the summary if it changed; False when it was held back because slices are waiting to be
        written (workers read the slices: they go first, and the summary waits at most SUMMARY_DELAY)."""
        if status == book.summary:
            book.summary_behind = None
            return True
        now = time.monotonic()
        book.summary_behind = book.summary_behind or now
        if book.dirty_slices and now - book.summary_behind < SUMMARY_DELAY:
            return False
        await asyncio.to_thread(self.store.write_summary, book, status)
        book.summary, book.summary_behind = status, None
        return True

    async def _read_back(self, book: Book) -> None:
        """Take into `book` what the API holds of it (its first write after start-up or a re-creation)."""
        found = await asyncio.to_thread(self.store.read_back, book.namespace, book.name)
        status = found.resource.status
        kept = book.read_back(
            found.resource.spec, found.generation, found.uid, status.conditions if status else [],
            status.phase.value if status else None, found.slices, found.ranks, found.unplaced, found.live,
        )  # fmt: skip
        for uid in kept:
            self._by_pod.setdefault(uid, set()).add(book.key)

    async def _merge_sparse(self, book: Book) -> list[WorkerSource] | None:
        """Give up the book's sparsest slice when the others can take its entries (`SlicePlan.merge_sparse`):
        the slices taking them are written first, then the emptied one is deleted, so a watcher sees the
        moved entries twice for a moment, never not at all. The entries as written, or None."""
        if book.dirty_slices:
            return None  # only once what changed is written
        merged = book.plan.merge_sparse()
        if merged is None:
            return None
        emptied, receivers = merged
        log.info("ModelMetadata %s/%s: slice %s merged into %s", book.namespace, book.name, emptied,
                 ", ".join(sorted(receivers)))  # fmt: skip
        book.dirty_slices.update(receivers)
        await self._write_slices(book)
        book.dirty_slices.add(emptied)
        written = await self._write_slices(book)
        book.dirty.set()  # another round looks for the next slice to merge
        return written

    async def _retry_later(self, book: Book, exc: Exception, delay: float) -> None:
        RECONCILES.labels(PLURAL, "error").inc()
        ERRORS.labels("status-write").inc()
        log.warning(
            "writing status of ModelMetadata %s/%s failed (%s); retrying in %.1fs",
            book.namespace,
            book.name,
            exc,
            delay,
        )
        await asyncio.sleep(delay)
        book.dirty.set()

    async def _recreate(self, book: Book) -> bool:
        """The resource was deleted while workers of it still run: create it again (level-triggered)."""
        entries = list(book.sources.values())
        spec = book.spec
        if not entries or spec is None:
            return False
        try:
            await asyncio.to_thread(self.store.create, book.namespace, book.name, spec, None)
        except client.ApiException:
            return False
        book.loaded, book.summary = False, None
        book.existing.clear()  # the old resource's slices go with it (garbage collection)
        book.written.clear()
        book.dirty_slices.update(book.plan.members)
        book.dirty.set()
        return True

    def _status_of(self, book: Book, entries: list[WorkerSource]) -> dict[str, Any]:
        assert book.spec is not None
        status = metadata_status(book.spec, entries, book.conditions, book.generation)
        book.conditions = [Condition.model_validate(c) for c in status.get("conditions", [])]
        return status

    def _announce(self, book: Book, status: dict[str, Any]) -> None:
        phase = status.get("phase")
        if phase == book.phase or book.uid is None:
            return
        previous, book.phase = book.phase, phase
        if previous is None and phase != "Ready":
            return
        ready = next((c for c in book.conditions if c.type == "Ready"), None)
        event_type = "Normal" if phase == "Ready" else "Warning"
        reason = ready.reason if ready else str(phase)
        message = ready.message if ready else ""
        asyncio.get_running_loop().run_in_executor(
            None,
            post_event,
            self.api,
            SourceStore.ref(book.namespace, book.name, book.uid),
            event_type,
            reason,
            message,
        )

    @staticmethod
    def _show_sources(book: Book) -> None:
        show_sources(book.namespace, book.name, [entry.state for entry in book.sources.values()])
