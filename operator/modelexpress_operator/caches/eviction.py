"""Freeing a ModelCache's storage: eviction of a cache left unused, and the retention policy on delete."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from modelexpress.api import ModelCacheSpec, ModelCacheStatus
from modelexpress_operator.cachejobs import claim_name
from modelexpress_operator.caches.kube import CacheApi
from modelexpress_operator.caches.naming import retry_command
from modelexpress_operator.caches.status import mark, wire

log = logging.getLogger(__name__)


def release(kube: CacheApi, namespace: str, name: str, spec: ModelCacheSpec) -> str:
    """Apply the retention policy (on delete, or an eviction); returns what was done."""
    if spec.storage.claim_name:
        return f"kept PersistentVolumeClaim {spec.storage.claim_name} (not created by the operator)"
    claim = claim_name(name, spec)
    if spec.storage.retention_policy == "Retain":
        return f"kept PersistentVolumeClaim {claim} (retentionPolicy Retain)"
    kube.delete_claim(namespace, claim)
    return f"deleted PersistentVolumeClaim {claim}"


def evict_if_unused(
    kube: CacheApi, namespace: str, name: str, spec: ModelCacheSpec, generation: int, status: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """Evict a Ready cache unused for longer than `eviction.unusedThreshold` (never a pinned one, never
    one a live pod mounts: that refreshes `lastUsedTime` instead): its PVC goes (when the operator
    created it) and the phase becomes Evicted. The status to write; empty when nothing changes."""
    threshold = spec.eviction.unused_threshold
    parsed = ModelCacheStatus.model_validate(status or {})
    if threshold is None or spec.eviction.pinned or parsed.phase != "Ready" or parsed.last_used_time is None:
        return {}
    idle = now - parsed.last_used_time
    if idle <= threshold:
        return {}
    users = kube.claim_users(namespace, parsed.claim_name)
    if users:
        # Mounted by a live pod: in use, whatever the clock says. Record the use instead.
        parsed.last_used_time = now.replace(microsecond=0)
        log.info("ModelCache %s/%s is in use by %s; not evicted", namespace, name, ", ".join(users[:3]))
        return wire(parsed)
    kube.delete_jobs(namespace, name)  # their finished pods would hold the volume (pvc-protection)
    released = release(kube, namespace, name, spec)
    parsed.phase = parsed.phase.EVICTED
    mark(
        parsed,
        generation,
        "Evicted",
        f"unused for {int(idle.total_seconds())}s (eviction.unusedThreshold {int(threshold.total_seconds())}s); "
        f"{released}; download it again with `{retry_command(name)}`",
    )
    return wire(parsed)
