"""The single writer of a model's source entries (its ModelSourceSlices) and of its ModelMetadata's summary.

Worker watchers report observations (a status message, a silence, a pod gone); the recorder applies
them to an in-memory book per ModelMetadata and marks the slices they touch dirty. Each book has one
writer task, so writes to one object never race: every change that arrives while a write is in
flight is carried by the next write (one PATCH per touched slice for a burst of workers, not one per
worker). A change of one worker rewrites its slice (at most 100 entries), and the ModelMetadata's
summary only when the summary changed. Entries are keyed by pod UID and port, so a pod replaced
under the same name is a different entry; an entry stays in the slice it was first put in
(`slices.SlicePlan`).

The first write after start-up loads the resource and its slices and keeps the recorded entries only
of pods that still exist, are opted in and Ready: a restarted operator loses nothing and keeps nothing
stale. Entries that a release before slices left in `status.sources` are moved into slices, which are
written before the list is emptied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from kubernetes import client
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.api import ModelMetadataSpec, SourceState, WorkerSource
from modelexpress.api.common import Condition
from modelexpress.api.modelmetadata import IDENTITY_LABEL, ModelIdentity, ModelMetadata
from modelexpress.api.modelsourceslice import METADATA_LABEL, ModelSourceSlice
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress_operator.events import post_event
from modelexpress_operator.metrics import (
    API_REQUESTS,
    ERRORS,
    RECONCILE_SECONDS,
    RECONCILES,
    forget_sources,
    show_sources,
)
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.slices import SlicePlan
from modelexpress_operator.status import metadata_status, slice_status
from modelexpress_operator.topology import Topology
from modelexpress_operator.workers import WorkerTarget, pod_targets, same_entry, source_entry

log = logging.getLogger(__name__)
PLURAL = ModelMetadata.PLURAL
SLICES = ModelSourceSlice.PLURAL
SLICE_WRITERS = 8
_MERGE_PATCH = "application/merge-patch+json"
BookKey = tuple[str, str]  # (namespace, name)


class Leadership(Protocol):
    @property
    def active(self) -> bool: ...


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

    def __post_init__(self) -> None:
        self.plan = SlicePlan(self.name)

    @property
    def key(self) -> BookKey:
        return (self.namespace, self.name)

    def changed(self, key: str) -> None:
        """Entry `key` was added or changed: its slice needs writing."""
        self.dirty_slices.add(self.plan.place(key))
        self.dirty.set()

    def removed(self, key: str) -> None:
        """Entry `key` is gone: its slice needs writing (or deleting, if now empty)."""
        self.sources.pop(key, None)
        name = self.plan.remove(key)
        if name is not None:
            self.dirty_slices.add(name)
        self.dirty.set()


def _port_of(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[-1]


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
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
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
        self.writes = 0

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
            if (name := self._names.get(cache_key)) is None:
                name = await asyncio.to_thread(self._find_or_create, target.namespace, identity)
                self._names[cache_key] = name
        return name

    def _find_or_create(self, namespace: str, identity: ModelIdentity) -> str:
        API_REQUESTS.labels("list", PLURAL).inc()
        listing = cast(
            dict[str, Any], self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)
        )
        digest = identity.identity_hash()
        matching = []
        for item in listing.get("items", []):
            try:
                spec = ModelMetadataSpec.model_validate(item.get("spec") or {})
            except ValidationError:
                continue
            if ModelIdentity.of(spec).identity_hash() == digest:
                matching.append(item["metadata"])
        if matching:
            return str(min(matching, key=lambda m: (m["creationTimestamp"], m["name"]))["name"])
        name = identity.resource_name()
        spec = identity.model_copy(update={"gpu_architecture": None})
        created = self._create(namespace, name, spec, {f"{API_GROUP}/created-by": "operator"})
        if created is None:  # created meanwhile by a user or another path: same name, same identity
            return name
        post_event(
            self.api,
            self._ref(namespace, name, created["metadata"]["uid"]),
            "Normal",
            "CreatedForWorker",
            f"created for the workers of {identity.model_name} ({identity.layout}) that opted in",
        )
        log.info("created ModelMetadata %s/%s for %s", namespace, name, identity.model_name)
        return name

    def _create(
        self, namespace: str, name: str, spec: ModelMetadataSpec, annotations: dict[str, str] | None
    ) -> dict[str, Any] | None:
        """Create a ModelMetadata labelled with its identity; None when one of that name exists already."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": ModelIdentity.of(spec).labels()}
        if annotations:
            metadata["annotations"] = annotations
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": ModelMetadata.KIND,
            "metadata": metadata,
            "spec": spec.to_api(),
        }
        try:
            API_REQUESTS.labels("create", PLURAL).inc()
            return cast(
                dict[str, Any],
                self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body),
            )
        except client.ApiException as exc:
            if exc.status == 409:
                return None
            raise

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
                    await asyncio.to_thread(self._load, book)
                await self._write_slices(book)
                status = self._status_of(book)
                if status != book.summary:
                    await asyncio.to_thread(self._write, book, status)
                    book.summary = status
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

    async def _write_slices(self, book: Book) -> None:
        """Write every dirty slice (at once: each is its own object), delete those left empty."""
        dirty, book.dirty_slices = book.dirty_slices, set()
        if not dirty:
            return
        contents = {name: [book.sources[k] for k in book.plan.keys(name) if k in book.sources] for name in dirty}
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._slice_writers, self._write_slice, book, name, entries)
              for name, entries in contents.items()),
            return_exceptions=True,
        )  # fmt: skip
        failures = [(name, r) for name, r in zip(contents, results, strict=True) if isinstance(r, BaseException)]
        for name, entries in contents.items():
            if not entries and name not in dict(failures):
                book.existing.discard(name)
                if not book.plan.drop_empty(name):  # refilled while it was being deleted
                    book.dirty_slices.add(name)
        if failures:
            book.dirty_slices.update(name for name, _ in failures)
            raise failures[0][1]

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
            await asyncio.to_thread(self._create, book.namespace, book.name, spec, None)
        except client.ApiException:
            return False
        book.loaded, book.summary = False, None
        book.existing.clear()  # the old resource's slices go with it (garbage collection)
        book.dirty_slices.update(book.plan.members)
        book.dirty.set()
        return True

    def _load(self, book: Book) -> None:
        """Read the resource and its slices; keep the recorded entries of pods that still exist, opted in
        and Ready, each in the slice it was in (entries of `status.sources`, from before slices: anywhere)."""
        API_REQUESTS.labels("get", PLURAL).inc()
        raw = cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, book.namespace, PLURAL, book.name),
        )
        resource = ModelMetadata.model_validate(raw)
        book.spec = book.spec or resource.spec
        book.generation = max(book.generation, int(raw["metadata"].get("generation") or 0))
        book.uid = raw["metadata"]["uid"]
        book.conditions = resource.status.conditions if resource.status else []
        book.phase = resource.status.phase.value if resource.status else None
        recorded: list[tuple[WorkerSource, str | None]] = []
        for piece in self._slices(book):
            name = piece.metadata["name"]
            owners = {ref.get("uid") for ref in piece.metadata.get("ownerReferences") or []}
            if book.uid not in owners:  # left by a deleted incarnation of the resource: replaced
                self._delete_slice(book, name)
                recorded += [(entry, None) for entry in (piece.status.sources if piece.status else [])]
                continue
            book.existing.add(name)
            book.plan.members.setdefault(name, set())
            book.dirty_slices.add(name)  # rewritten once: dead pods' entries go, an emptied slice is deleted
            recorded += [(entry, name) for entry in (piece.status.sources if piece.status else [])]
        recorded += [(entry, None) for entry in (resource.status.sources if resource.status else [])]
        if recorded:
            API_REQUESTS.labels("list", "pods").inc()
            reply = self.core.list_namespaced_pod(book.namespace, _preload_content=False)
            live = {
                pod["metadata"]["uid"]
                for pod in json.loads(reply.data).get("items", [])
                if _followable(pod, self.settings.default_worker_port)
            }
            for entry, known in recorded:
                uid = entry.pod_uid
                if uid is None or uid not in live or uid in book.removed_pods:
                    continue
                key = f"{uid}:{_port_of(entry.endpoint)}"
                if key not in book.sources:
                    book.sources[key] = entry
                    book.dirty_slices.add(book.plan.place(key, known))
                    self._by_pod.setdefault(uid, set()).add(book.key)
        book.loaded = True

    def _slices(self, book: Book) -> list[ModelSourceSlice]:
        """The slices of the book's ModelMetadata, by label (unreadable ones are skipped, and replaced)."""
        API_REQUESTS.labels("list", SLICES).inc()
        reply = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, book.namespace, SLICES, label_selector=f"{METADATA_LABEL}={book.name}"
            ),
        )
        found = []
        for item in reply.get("items", []):
            try:
                found.append(ModelSourceSlice.model_validate(item))
            except ValidationError as exc:
                log.warning("ignoring ModelSourceSlice %s: %s", item.get("metadata", {}).get("name"), exc)
        return found

    def _status_of(self, book: Book) -> dict[str, Any]:
        assert book.spec is not None
        status = metadata_status(book.spec, list(book.sources.values()), book.conditions, book.generation)
        book.conditions = [Condition.model_validate(c) for c in status.get("conditions", [])]
        return status

    def _write(self, book: Book, status: dict[str, Any]) -> None:
        API_REQUESTS.labels("patch", f"{PLURAL}/status").inc()
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, book.namespace, PLURAL, book.name, {"status": status}, _content_type=_MERGE_PATCH
        )
        self.writes += 1

    def _write_slice(self, book: Book, name: str, entries: list[WorkerSource]) -> None:
        """Make slice `name` hold exactly `entries`: patch its status, creating it first when it does not
        exist; delete it when `entries` is empty."""
        if not entries:
            if name in book.existing:
                self._delete_slice(book, name)
            return
        body = {"status": slice_status(entries)}
        if name not in book.existing:
            self._create_slice(book, name)
        try:
            API_REQUESTS.labels("patch", f"{SLICES}/status").inc()
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, book.namespace, SLICES, name, body, _content_type=_MERGE_PATCH
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            book.existing.discard(name)  # deleted behind our back: made again
            self._create_slice(book, name)
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, book.namespace, SLICES, name, body, _content_type=_MERGE_PATCH
            )
        self.writes += 1

    def _delete_slice(self, book: Book, name: str) -> None:
        API_REQUESTS.labels("delete", SLICES).inc()
        try:
            self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, book.namespace, SLICES, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        self.writes += 1

    def _create_slice(self, book: Book, name: str) -> None:
        """Create slice `name`, owned by (and so deleted with) the book's ModelMetadata."""
        assert book.spec is not None and book.uid is not None
        labels = {METADATA_LABEL: book.name[:63], IDENTITY_LABEL: ModelIdentity.of(book.spec).identity_hash()}
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": ModelSourceSlice.KIND,
            "metadata": {
                "name": name,
                "namespace": book.namespace,
                "labels": labels,
                "ownerReferences": [self._owner(book)],
            },
            "spec": {"modelMetadata": book.name},
        }
        API_REQUESTS.labels("create", SLICES).inc()
        try:
            self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, book.namespace, SLICES, body)
        except client.ApiException as exc:
            if exc.status != 409:  # made already (a write that failed after it): patched next
                raise
        book.existing.add(name)
        self.writes += 1

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
            None, post_event, self.api, self._ref(book.namespace, book.name, book.uid), event_type, reason, message
        )

    @staticmethod
    def _show_sources(book: Book) -> None:
        show_sources(book.namespace, book.name, [entry.state for entry in book.sources.values()])

    @classmethod
    def _owner(cls, book: Book) -> dict[str, Any]:
        """The owner reference of the book's slices: its ModelMetadata (garbage collection deletes them with it)."""
        assert book.uid is not None
        return {**cls._ref(book.namespace, book.name, book.uid), "controller": True, "blockOwnerDeletion": True}

    @staticmethod
    def _ref(namespace: str, name: str, uid: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": ModelMetadata.KIND,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        }


def _followable(pod: dict[str, Any], default_port: int) -> bool:
    try:
        return bool(pod_targets(pod, default_port))
    except ValueError:
        return False
