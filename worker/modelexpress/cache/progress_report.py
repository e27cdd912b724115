"""Reporting a Job's download progress on its ModelCache (`status.progress`), at a bounded rate.

The Job's ServiceAccount may patch `modelcaches/status`; without that right the download goes on
and progress is simply not shown (logged once). Writes are at least `interval` seconds apart, plus
one final write, so a multi-hour download costs a few thousand small PATCHes at most.
"""

from __future__ import annotations

import logging
import threading
import time

from modelexpress import API_GROUP, API_VERSION

log = logging.getLogger(__name__)


class CacheProgressReporter:
    """Callable progress sink that patches `status.progress` of one ModelCache."""

    def __init__(self, namespace: str, name: str, interval: float = 2.0) -> None:
        from kubernetes import client

        from modelexpress.kubeclient import kube_api_client

        self.namespace, self.name, self.interval = namespace, name, interval
        self._custom = client.CustomObjectsApi(kube_api_client())
        self._last = 0.0
        self._lock = threading.Lock()
        self._disabled = False
        self.writes = 0

    def __call__(self, done: int, total: int, files: int, total_files: int) -> None:
        now = time.monotonic()
        with self._lock:
            if self._disabled or (now - self._last < self.interval and done < total):
                return
            self._last = now
        progress = {
            "bytesDone": done,
            "bytesTotal": total,
            "filesDone": files,
            "filesTotal": total_files,
            "percent": min(100, int(100 * done / total)) if total else 100,
        }
        try:
            self._custom.patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                self.namespace,
                "modelcaches",
                self.name,
                {"status": {"progress": progress}},
                _content_type="application/merge-patch+json",
            )
            self.writes += 1
        except Exception as exc:
            with self._lock:
                self._disabled = True
            log.warning("progress is not reported on modelcache %s/%s: %s", self.namespace, self.name, exc)
