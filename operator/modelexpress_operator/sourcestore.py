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
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client
from pydantic import ValidationError

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import ModelMetadataSpec, WorkerSource
from modelexpress.api.modelmetadata import IDENTITY_LABEL, ModelIdentity, ModelMetadata, label_value
from modelexpress.api.modelsourceslice import METADATA_LABEL, RANK_LABEL, ModelSourceSlice, metadata_selector
from modelexpress_operator.book import Book, SliceWrite, resource_version
from modelexpress_operator.metrics import API_REQUESTS
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.status import slice_status
from modelexpress_operator.workers import pod_targets

log = logging.getLogger(__name__)
PLURAL = ModelMetadata.PLURAL
SLICES = ModelSourceSlice.PLURAL
_MERGE_PATCH = "application/merge-patch+json"


@dataclass
class ReadBack:
    """A ModelMetadata and its entries as the API holds them (see `SourceStore.read_back`)."""

    resource: ModelMetadata
    generation: int
    uid: str
    slices: dict[str, list[WorkerSource]] = field(default_factory=dict)
    """The resource's own slices, by name."""
    ranks: dict[str, int | None] = field(default_factory=dict)
    """The rank of each of those slices (None: a slice of a release before slices held one rank)."""
    unplaced: list[WorkerSource] = field(default_factory=list)
    """Entries in no slice of the resource (`status.sources` of a release before slices, or a slice of a
    deleted incarnation)."""
    live: set[str] = field(default_factory=set)
    """UIDs of the namespace's pods that are opted in and Ready."""


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

    def read_back(self, namespace: str, name: str) -> ReadBack:
        """What the API holds of ModelMetadata `name`: the resource, its slices' entries (a slice left by a
        deleted incarnation of the resource is deleted, its entries kept as unplaced, like those a release
        before slices left in `status.sources`), and which pods could still be followed."""
        API_REQUESTS.labels("get", PLURAL).inc()
        raw = cast(
            dict[str, Any], self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        )
        found = ReadBack(ModelMetadata.model_validate(raw), int(raw["metadata"].get("generation") or 0),
                         raw["metadata"]["uid"])  # fmt: skip
        for piece in self._slices(namespace, name):
            entries = piece.status.sources if piece.status else []
            owners = {ref.get("uid") for ref in piece.metadata.get("ownerReferences") or []}
            if found.uid in owners:
                found.slices[piece.metadata["name"]] = entries
                found.ranks[piece.metadata["name"]] = piece.spec.rank
            else:
                self.delete_slice(namespace, piece.metadata["name"])
                found.unplaced += entries
        status = found.resource.status
        found.unplaced += status.sources if status else []
        if found.slices or found.unplaced:
            API_REQUESTS.labels("list", "pods").inc()
            reply = self.core.list_namespaced_pod(namespace, _preload_content=False)
            found.live = {
                pod["metadata"]["uid"]
                for pod in json.loads(reply.data).get("items", [])
                if _followable(pod, self.settings.default_worker_port)
            }
        return found

    def _slices(self, namespace: str, name: str) -> list[ModelSourceSlice]:
        """The slices of the book's ModelMetadata, by label (unreadable ones are skipped, and replaced)."""
        API_REQUESTS.labels("list", SLICES).inc()
        reply = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, SLICES, label_selector=metadata_selector(name)
            ),
        )
        found = []
        for item in reply.get("items", []):
            try:
                piece = ModelSourceSlice.model_validate(item)
            except ValidationError as exc:
                log.warning("ignoring ModelSourceSlice %s: %s", item.get("metadata", {}).get("name"), exc)
                continue
            if piece.spec.model_metadata == name:  # not another resource whose name shares the label value
                found.append(piece)
        return found

    def write_summary(self, book: Book, status: dict[str, Any]) -> None:
        API_REQUESTS.labels("patch", f"{PLURAL}/status").inc()
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, book.namespace, PLURAL, book.name, {"status": status}, _content_type=_MERGE_PATCH
        )
        self.writes += 1

    def write_slice(self, book: Book, name: str, entries: list[WorkerSource]) -> SliceWrite | None:
        """Make slice `name` hold exactly `entries`: patch its status, creating it first when it does not
        exist; delete it when `entries` is empty. What was written (None for a deletion or nothing)."""
        if not entries:
            if name in book.existing:
                self.delete_slice(book.namespace, name)
            return None
        body = {"status": slice_status(entries)}
        if name not in book.existing:
            self._create_slice(book, name)
        try:
            API_REQUESTS.labels("patch", f"{SLICES}/status").inc()
            written = self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, book.namespace, SLICES, name, body, _content_type=_MERGE_PATCH
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            book.existing.discard(name)  # deleted behind our back: made again
            self._create_slice(book, name)
            written = self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, book.namespace, SLICES, name, body, _content_type=_MERGE_PATCH
            )
        self.writes += 1
        return SliceWrite(resource_version(written), body["status"])

    def delete_slice(self, namespace: str, name: str) -> None:
        API_REQUESTS.labels("delete", SLICES).inc()
        try:
            self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, SLICES, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        self.writes += 1

    def _create_slice(self, book: Book, name: str) -> None:
        """Create slice `name`, owned by (and so deleted with) the book's ModelMetadata."""
        assert book.spec is not None and book.uid is not None
        rank = book.plan.rank_of[name]
        labels = {METADATA_LABEL: label_value(book.name), IDENTITY_LABEL: ModelIdentity.of(book.spec).identity_hash(),
                  RANK_LABEL: str(rank)}  # fmt: skip
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": ModelSourceSlice.KIND,
            "metadata": {
                "name": name,
                "namespace": book.namespace,
                "labels": labels,
                "ownerReferences": [self.owner(book)],
            },
            "spec": {"modelMetadata": book.name, "rank": rank},
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
