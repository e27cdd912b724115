"""The Kubernetes reads and writes of a model's records: its ModelMetadata and its ModelSourceSlices.

The recorder decides what a book should hold; this module makes the API hold it: finding or creating
the ModelMetadata of an identity, reading a book back at start-up (the slices by label, and the
entries a release before slices left in `status.sources`), writing the summary, and creating,
patching and deleting slices, each owned by its ModelMetadata. Every call here blocks: the recorder
runs them off its event loop.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from kubernetes import client
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import ModelMetadataSpec, WorkerSource
from modelexpress.api.modelmetadata import IDENTITY_LABEL, ModelIdentity, ModelMetadata
from modelexpress.api.modelsourceslice import METADATA_LABEL, ModelSourceSlice
from modelexpress_operator.book import Book, port_of
from modelexpress_operator.metrics import API_REQUESTS
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.status import slice_status
from modelexpress_operator.workers import pod_targets

log = logging.getLogger(__name__)
PLURAL = ModelMetadata.PLURAL
SLICES = ModelSourceSlice.PLURAL
_MERGE_PATCH = "application/merge-patch+json"


class SourceStore:
    """ModelMetadata and ModelSourceSlice I/O for the recorder; counts the writes it makes."""

    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.settings = settings
        self.writes = 0

    def find_or_create(self, namespace: str, identity: ModelIdentity) -> tuple[str, dict[str, Any] | None]:
        """The ModelMetadata of `identity` (the oldest with that spec), else a new one: (its name, the created
        object when this call created it)."""
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
            return str(min(matching, key=lambda m: (m["creationTimestamp"], m["name"]))["name"]), None
        name = identity.resource_name()
        spec = identity.model_copy(update={"gpu_architecture": None})
        created = self.create(namespace, name, spec, {f"{API_GROUP}/created-by": "operator"})
        return name, created  # None: created meanwhile by a user or another path (same name, same identity)

    def create(
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

    def load(self, book: Book) -> None:
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
                self.delete_slice(book, name)
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
                key = f"{uid}:{port_of(entry.endpoint)}"
                if key not in book.sources:
                    book.sources[key] = entry
                    book.dirty_slices.add(book.plan.place(key, known))
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

    def write_summary(self, book: Book, status: dict[str, Any]) -> None:
        API_REQUESTS.labels("patch", f"{PLURAL}/status").inc()
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, book.namespace, PLURAL, book.name, {"status": status}, _content_type=_MERGE_PATCH
        )
        self.writes += 1

    def write_slice(self, book: Book, name: str, entries: list[WorkerSource]) -> None:
        """Make slice `name` hold exactly `entries`: patch its status, creating it first when it does not
        exist; delete it when `entries` is empty."""
        if not entries:
            if name in book.existing:
                self.delete_slice(book, name)
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

    def delete_slice(self, book: Book, name: str) -> None:
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
                "ownerReferences": [self.owner(book)],
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

    @classmethod
    def owner(cls, book: Book) -> dict[str, Any]:
        """The owner reference of the book's slices: its ModelMetadata (garbage collection deletes them with it)."""
        assert book.uid is not None
        return {**cls.ref(book.namespace, book.name, book.uid), "controller": True, "blockOwnerDeletion": True}

    @staticmethod
    def ref(namespace: str, name: str, uid: str) -> dict[str, Any]:
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
