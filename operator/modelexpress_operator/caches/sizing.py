"""How big a ModelCache's PVC must be when `spec.storage.size` is not given: the operator reads a public
hub repository's size itself; anything it cannot read anonymously is sized by a Job with the cache's
credentials (`NeedsSizingJob`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from modelexpress.api import ModelCacheSpec
from modelexpress.cache.errors import DownloadError
from modelexpress.cache.huggingface import plan_download
from modelexpress.cache.sources import parse_source
from modelexpress_operator.caches.refusals import Refused
from modelexpress_operator.settings import OperatorSettings


@dataclass(frozen=True)
class NeedsSizingJob:
    """The source's size needs the Job's credentials; `why` says which."""

    why: str


def source_size(spec: ModelCacheSpec, settings: OperatorSettings) -> int | NeedsSizingJob:
    """The source's bytes as the operator can read them, or that a sizing Job must; a retryable failure
    raises Refused (retried), any other the DownloadError with its own reason (NotFound, Unauthorized)."""
    source = parse_source(spec.source)
    if source.provider != "hf":
        return NeedsSizingJob(f"the size of {spec.source} needs the Job's credentials")
    endpoint = settings.hf_endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        plan = plan_download(
            source.name, spec.revision or "main", spec.allow_patterns, spec.ignore_patterns, None, endpoint
        )
    except DownloadError as exc:
        if exc.reason.value == "Unauthorized" and spec.credentials_secret_ref is not None:
            return NeedsSizingJob(
                f"{spec.source} is not public; its size is read with Secret {spec.credentials_secret_ref.name}"
            )
        if exc.retryable:
            raise Refused(
                exc.reason.value, f"reading the size of {spec.source} failed, retried: {exc}; or set spec.storage.size"
            ) from None
        raise
    return plan.total_bytes
