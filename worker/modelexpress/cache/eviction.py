"""LRU eviction of the local cache: which models to remove, and why. Pure: the caller deletes."""

from __future__ import annotations

from dataclasses import dataclass

from modelexpress.cache.database import CachedModel


@dataclass(frozen=True)
class EvictionPolicy:
    """The seeds' `cache.eviction.policy` and `cache.max_size_bytes`, in seconds and bytes."""

    unused_threshold_secs: float | None = None
    max_models: int | None = None
    max_size_bytes: int | None = None
    min_free_space_bytes: int | None = None


@dataclass(frozen=True)
class Eviction:
    model: CachedModel
    reason: str


def plan_eviction(models: list[CachedModel], policy: EvictionPolicy, now: float, free_bytes: int) -> list[Eviction]:
    """Models to evict, least recently used first; pinned or in-use models are never chosen.

    Rules, in order: unused for longer than the threshold; then, while any limit is exceeded
    (more than `max_models`, more than `max_size_bytes` in all, less than `min_free_space_bytes`
    free), the least recently used of the rest.
    """
    candidates = sorted((m for m in models if not m.pinned and m.in_use == 0), key=lambda m: m.last_used_at)
    chosen: list[Eviction] = []
    kept_count, kept_size, free = len(models), sum(m.size_bytes for m in models), free_bytes

    def take(model: CachedModel, reason: str) -> None:
        nonlocal kept_count, kept_size, free
        chosen.append(Eviction(model, reason))
        kept_count, kept_size, free = kept_count - 1, kept_size - model.size_bytes, free + model.size_bytes

    rest = []
    for model in candidates:
        idle = now - model.last_used_at
        if policy.unused_threshold_secs is not None and idle > policy.unused_threshold_secs:
            take(model, f"unused for {idle / 3600:.1f} h (threshold {policy.unused_threshold_secs / 3600:.1f} h)")
        else:
            rest.append(model)
    for model in rest:
        if policy.max_models is not None and kept_count > policy.max_models:
            take(model, f"{kept_count} models cached, max_models is {policy.max_models}")
        elif policy.max_size_bytes is not None and kept_size > policy.max_size_bytes:
            take(model, f"{kept_size} bytes cached, max_size_bytes is {policy.max_size_bytes}")
        elif policy.min_free_space_bytes is not None and free < policy.min_free_space_bytes:
            take(model, f"{free} bytes free, min_free_space_bytes is {policy.min_free_space_bytes}")
    return chosen
