"""The server in the cluster: models are ModelCache resources, files are read from the cache PVC.

*ensure* creates (or reuses) one ModelCache per model and revision, named from both, and follows its
status until Ready or Failed, reporting the Job's progress as it goes: the download itself is the
operator's cache Job, never a second download path. ModelCaches the server creates download into
the ReadWriteMany claim the server mounts (`MX_SERVER_CACHE_CLAIM`), so it can stream their files to
clients without shared storage. Asked again for a model whose cache failed, *ensure* has the operator
start one more attempt (`modelexpress.io/retry`) rather than repeat the old failure. *delete* deletes
the ModelCache; its finalizer applies the retention policy.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kubernetes import client

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api.modelcache import RETRY_ANNOTATION, ModelCache, ModelCachePhase
from modelexpress.cache.database import CachedModel
from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.local import cache_directory
from modelexpress.cache.sources import ModelSource, parse_source
from modelexpress.cache.transfers import Progress
from modelexpress.config import ModelExpressConfig
from modelexpress.config.cluster import ClusterServerSettings
from modelexpress.kubeclient import default_namespace, kube_api_client
from modelexpress.server.stores import StoreUnavailableError

log = logging.getLogger(__name__)
PLURAL = ModelCache.PLURAL
CREATED_BY = f"{API_GROUP}/created-by"
POLL_SECONDS = 0.5
RETRY_ANSWER_SECONDS = 30.0
"""How long a retry request may wait for the operator to take it up before *ensure* gives up."""


def cache_name(source: ModelSource, revision: str) -> str:
    """A stable, valid resource name for one model and revision (readable slug + hash of both)."""
    slug = re.sub(r"[^a-z0-9]+", "-", source.name.lower()).strip("-")[:40].strip("-") or "model"
    digest = hashlib.sha256(f"{source.uri}@{revision}".encode()).hexdigest()[:10]
    return f"{source.provider}-{slug}-{digest}"


def _timestamp(raw: Any) -> float:
    if isinstance(raw, datetime):
        return raw.timestamp()
    if isinstance(raw, str) and raw:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    return 0.0


class ClusterStore:
    """Models as ModelCaches in one namespace; files from the claim mounted at `mount`."""

    def __init__(
        self, config: ModelExpressConfig, settings: ClusterServerSettings, api: client.ApiClient | None = None
    ) -> None:
        self.settings = settings
        self.namespace = default_namespace(settings.namespace)
        self.mount = Path(settings.cache_mount or cache_directory(config)).expanduser()
        self.custom = client.CustomObjectsApi(api or kube_api_client())
        self._closed = threading.Event()

    # --- reading ModelCaches --------------------------------------------------------------------
    def _list(self) -> list[dict[str, Any]]:
        listing = cast(
            dict[str, Any], self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL)
        )
        return cast(list[dict[str, Any]], listing["items"])

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name),
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _local(self, obj: dict[str, Any]) -> Path | None:
        status = obj.get("status") or {}
        relative = str(status.get("path") or "")
        if not relative or status.get("claimName") != self.settings.cache_claim:
            return None
        return self.mount / relative.lstrip("/")

    def _model(self, obj: dict[str, Any]) -> CachedModel | None:
        status = obj.get("status") or {}
        if status.get("phase") != ModelCachePhase.READY:
            return None
        spec = obj["spec"]
        source = parse_source(spec["source"])
        local = self._local(obj)
        files = sum(1 for p in local.rglob("*") if p.is_file()) if local and local.is_dir() else 0
        created = _timestamp(obj["metadata"].get("creationTimestamp"))
        return CachedModel(
            provider=source.provider,
            name=source.name,
            revision=spec.get("revision") or "main",
            resolved_revision=status.get("resolvedRevision") or "",
            path=str(local) if local else f"pvc://{status.get('claimName')}/{status.get('path', '')}",
            size_bytes=int(status.get("sizeBytes") or 0),
            files=files,
            downloaded_at=created,
            last_used_at=_timestamp(status.get("lastUsedTime")) or created,
            pinned=bool((spec.get("eviction") or {}).get("pinned")),
        )

    def _matching(self, source: ModelSource, revision: str | None) -> list[dict[str, Any]]:
        found = []
        for obj in self._list():
            try:
                other = parse_source(obj["spec"]["source"])
            except DownloadError:
                continue
            if (other.provider, other.name) == (source.provider, source.name) and (
                revision is None or (obj["spec"].get("revision") or "main") == revision
            ):
                found.append(obj)
        return found

    def models(self) -> list[CachedModel]:
        return [m for m in map(self._model, self._list()) if m is not None]

    def find(self, source: ModelSource, revision: str | None = None) -> list[CachedModel]:
        return [m for m in map(self._model, self._matching(source, revision)) if m is not None]

    # --- ensure ---------------------------------------------------------------------------------
    def _create(
        self, name: str, source: ModelSource, revision: str, allow: list[str] | None, ignore: list[str] | None
    ) -> None:
        spec: dict[str, Any] = {"source": source.uri}
        if source.provider == "hf":
            spec["revision"] = revision
        if allow:
            spec["allowPatterns"] = allow
        if ignore:
            spec["ignorePatterns"] = ignore
        if self.settings.cache_claim:
            spec["storage"] = {"claimName": self.settings.cache_claim}
        elif self.settings.storage_size:
            spec["storage"] = {"size": self.settings.storage_size}
        if self.settings.credentials_secret:
            spec["credentialsSecretRef"] = {"name": self.settings.credentials_secret}
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": ModelCache.KIND,
            "metadata": {"name": name, "labels": {CREATED_BY: "modelexpress-server"}},
            "spec": spec,
        }
        try:
            self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, body)
            log.info("created ModelCache %s/%s for %s@%s", self.namespace, name, source.uri, revision)
        except client.ApiException as exc:
            if exc.status == 409:
                return  # another replica (or request) created it first: follow that one
            if exc.status in (401, 403):
                raise DownloadError(
                    FailureReason.UNAUTHORIZED,
                    f"the server may not create ModelCaches in {self.namespace} (HTTP {exc.status}); "
                    "grant its ServiceAccount the chart's server Role",
                ) from None
            if exc.status == 422:
                raise DownloadError(
                    FailureReason.INVALID_SOURCE, f"the API server refused the ModelCache: {exc.body}"
                ) from None
            raise

    def ensure(
        self, source: ModelSource, revision: str, allow: list[str] | None, ignore: list[str] | None, progress: Progress
    ) -> CachedModel:
        revision = revision if source.provider == "hf" else "main"
        name = cache_name(source, revision)
        obj = self._get(name)
        if obj is not None and (obj.get("status") or {}).get("phase") == ModelCachePhase.EVICTED:
            # Its files are gone: a new ModelCache downloads it again.
            self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name)
            while self._get(name) is not None:
                time.sleep(POLL_SECONDS)
            obj = None
        if obj is None:
            self._create(name, source, revision, allow, ignore)
        elif (obj.get("status") or {}).get("phase") == ModelCachePhase.FAILED:
            # Asked again after a failure (the cause may be fixed now): one more attempt, not the old verdict.
            self._request_retry(name, (obj.get("status") or {}).get("lastHandledRetry"))
        reported: tuple[int, int] | None = None
        while not self._closed.is_set():
            obj = self._get(name)
            if obj is None:
                raise DownloadError(
                    FailureReason.NOT_FOUND, f"ModelCache {self.namespace}/{name} was deleted while waiting"
                )
            status = obj.get("status") or {}
            phase = status.get("phase")
            if phase == ModelCachePhase.READY and status.get("observedGeneration") == obj["metadata"].get("generation"):
                model = self._model(obj)
                assert model is not None
                return model
            if phase == ModelCachePhase.FAILED:
                ready: dict[str, Any] = next(
                    (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
                )
                reason = ready.get("reason", "")
                known = reason if reason in FailureReason.__members__.values() else FailureReason.NETWORK
                raise DownloadError(
                    FailureReason(known), f"ModelCache {self.namespace}/{name}: {ready.get('message', phase)}"
                )
            done = status.get("progress") or {}
            now = (int(done.get("bytesDone") or 0), int(done.get("bytesTotal") or 0))
            if now != reported and now[1]:
                progress(now[0], now[1], int(done.get("filesDone") or 0), int(done.get("filesTotal") or 0))
                reported = now
            self._closed.wait(POLL_SECONDS)
        raise DownloadError(FailureReason.NETWORK, "the server is shutting down; ask again")

    def _request_retry(self, name: str, handled: str | None) -> None:
        """Ask the operator for the failed cache's next attempt (a new value of its retry annotation) and
        wait until it has taken a request up (`lastHandledRetry` moved on from `handled`: ours, or another
        client's that came just before or after), so that the old failure is not read as the answer."""
        token = f"server-{int(time.time())}-{secrets.token_hex(4)}"
        patch = {"metadata": {"annotations": {RETRY_ANNOTATION: token}}}
        self.custom.patch_namespaced_custom_object(API_GROUP, API_VERSION, self.namespace, PLURAL, name, patch)
        log.info("ModelCache %s/%s failed before: asked the operator for another attempt", self.namespace, name)
        deadline = time.monotonic() + RETRY_ANSWER_SECONDS
        while not self._closed.is_set():
            obj = self._get(name)
            if obj is None or (obj.get("status") or {}).get("lastHandledRetry") != handled:
                return
            if time.monotonic() > deadline:
                raise DownloadError(
                    FailureReason.NETWORK,
                    f"ModelCache {self.namespace}/{name} failed before, and the operator did not take up a retry "
                    f"request ({RETRY_ANNOTATION}) within {RETRY_ANSWER_SECONDS:g}s: is it running?",
                )
            self._closed.wait(POLL_SECONDS)

    # --- files ----------------------------------------------------------------------------------
    def files_root(self, model: CachedModel) -> Path:
        root = Path(model.path)
        if model.path.startswith("pvc://"):
            raise StoreUnavailableError(
                f"{model.uri} is on PVC {model.path.split('/')[2]}, which this server does not mount; "
                "mount the pod on that claim, or set MX_SERVER_CACHE_CLAIM so the server's ModelCaches share one"
            )
        if not root.is_dir():
            raise StoreUnavailableError(
                f"{model.uri} is Ready but {root} is not there: is the claim mounted at {self.mount}?"
            )
        return root

    def relative_path(self, model: CachedModel) -> str:
        try:
            return Path(model.path).relative_to(self.mount).as_posix()
        except ValueError:
            return ""

    def touch(self, model: CachedModel) -> None:
        """Uses are recorded by workers on the ModelCache's status, not by the server (it only reads)."""

    def remove(self, source: ModelSource, revision: str | None) -> list[CachedModel]:
        removed = []
        for obj in self._matching(source, revision):
            try:
                self.custom.delete_namespaced_custom_object(
                    API_GROUP, API_VERSION, self.namespace, PLURAL, obj["metadata"]["name"]
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
            model = self._model(obj)
            if model is not None:
                removed.append(model)
        return removed

    def directory(self) -> Path:
        return self.mount

    def close(self) -> None:
        self._closed.set()
        self.custom.api_client.close()
