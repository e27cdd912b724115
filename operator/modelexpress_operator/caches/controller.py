"""`CacheController`: a ModelCache's claim and Jobs from its spec, its status from its Jobs' outcomes.

Level-triggered: every call looks at what exists (claim, Job) and creates what is missing; calling it
twice creates nothing twice (names are deterministic, 409 means "already there"). Every status it
decides is told as an Event when its Ready condition changes (`status.event_of`), in the same step as
the write. Blocking `kubernetes` calls; handlers run them in a thread.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from modelexpress.api import RETRY_ANNOTATION, ModelCacheSpec, ModelCacheStatus
from modelexpress.cache.errors import DownloadError
from modelexpress_operator.cachejobs import (
    CACHE_LABEL,
    claim_name,
    failure_of,
    is_sizing_job,
    job_manifest,
    job_outcome,
    pod_result,
    pvc_manifest,
    pvc_size,
    sizing_job_manifest,
)
from modelexpress_operator.caches import eviction
from modelexpress_operator.caches.kube import CacheApi
from modelexpress_operator.caches.naming import attempt_of, is_sizing, job_name, sizing_job_name
from modelexpress_operator.caches.refusals import Refused
from modelexpress_operator.caches.sizing import NeedsSizingJob, source_size
from modelexpress_operator.caches.status import (
    REFUSED_RETRY_SECS,
    event_of,
    mark,
    mark_downloaded,
    mark_failed,
    mark_waiting,
    wire,
)
from modelexpress_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciled:
    """What a reconcile decided: the status to write (empty: nothing changes) and, when the cache waits
    on something (a refused request, a missing claim), why: the handler tries again later."""

    status: dict[str, Any]
    waiting: str | None = None


class CacheController:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.kube = CacheApi(api)
        self.settings = settings

    def tell(self, namespace: str, name: str, uid: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Post the Event a status change is told with, if any."""
        event = event_of(before, after)
        if event is not None:
            self.kube.event(namespace, name, uid, *event)

    def write(self, namespace: str, name: str, uid: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        """Merge `after` into the cache's status and tell what changed."""
        self.kube.merge_status(namespace, name, after)
        self.tell(namespace, name, uid, before, after)

    # --- spec -> PVC + Job ----------------------------------------------------------------------

    def reconcile(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, current: dict[str, Any]
    ) -> Reconciled:
        """The status after making sure the claim and this generation's Job exist (the handler writes it;
        the Event is told here)."""
        result = self._reconciled(namespace, name, uid, spec, generation, current)
        self.tell(namespace, name, uid, current or {}, result.status)
        return result

    def _reconciled(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, current: dict[str, Any]
    ) -> Reconciled:
        status = ModelCacheStatus.model_validate(current or {})
        if status.phase in ("Ready", "Failed", "Evicted") and status.observed_generation == generation:
            return Reconciled({})  # settled; Job events, the retry and eviction daemons take it from here
        if status.observed_generation != generation:
            status.source_bytes = None  # read for another spec
            status.next_retry_time = None  # planned for another spec
        status.observed_generation = generation
        sizing = is_sizing(status.job_name)
        try:
            claim = self._ensure_claim(namespace, name, uid, spec, status.source_bytes)
            if isinstance(claim, NeedsSizingJob):
                attempt = max(1, attempt_of(status.job_name, generation)) if sizing else 1
                status.job_name = self._ensure_sizing_job(namespace, name, uid, spec, generation, attempt)
                status.phase = status.phase.PENDING
                mark(status, generation, "Sizing", f"{claim.why}: Job {status.job_name} reads it")
                return Reconciled(wire(status))
            attempt = max(1, attempt_of(status.job_name, generation)) if not sizing else 1
            job = self._ensure_job(namespace, name, uid, spec, generation, attempt)
        except Refused as refused:
            mark_waiting(status, generation, *refused.args)
            return Reconciled(wire(status), waiting=refused.args[1])
        except DownloadError as exc:
            mark_failed(status, name, generation, exc.reason.value, str(exc), self.settings)
            return Reconciled(wire(status))
        status.claim_name, status.job_name = claim, job
        status.phase = status.phase.PENDING if status.phase != "Downloading" else status.phase
        mark(status, generation, "Downloading", f"download Job {job} started")
        return Reconciled(wire(status))

    def _ensure_claim(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, source_bytes: int | None
    ) -> str | NeedsSizingJob:
        """The claim's name once it exists, or that a sizing Job must read the source's size first."""
        claim = claim_name(name, spec)
        if self.kube.claim_exists(namespace, claim):
            return claim
        if spec.storage.claim_name:
            raise Refused(
                "ClaimNotFound", f"spec.storage.claimName: PersistentVolumeClaim {claim} does not exist in {namespace}"
            )
        if spec.storage.size is None and source_bytes is None:
            size = source_size(spec, self.settings)
            if isinstance(size, NeedsSizingJob):
                return size
            source_bytes = size
        self.kube.create_claim(namespace, pvc_manifest(name, uid, spec, pvc_size(spec, source_bytes)))
        return claim

    def _ensure_job(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, attempt: int
    ) -> str:
        job = job_name(name, generation, attempt)
        account = self.kube.service_account(namespace, self.settings.job_service_account)
        return self.kube.create_job(namespace, job_manifest(name, namespace, uid, spec, self.settings, job, account),
                                    "download")  # fmt: skip

    def _ensure_sizing_job(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, attempt: int
    ) -> str:
        job = sizing_job_name(name, generation, attempt)
        return self.kube.create_job(namespace, sizing_job_manifest(name, uid, spec, self.settings, job), "sizing")

    # --- Job -> status --------------------------------------------------------------------------

    def job_changed(self, namespace: str, job: dict[str, Any]) -> None:
        """Fold a Job's state into its ModelCache's status."""
        cache_name = (job["metadata"].get("labels") or {}).get(CACHE_LABEL)
        found = self._cache_of_job(namespace, cache_name, job["metadata"]["name"]) if cache_name else None
        if found is None:
            return
        cache, before, status = found
        generation = int(cache["metadata"].get("generation") or 0)
        outcome = job_outcome(job)
        if is_sizing_job(job):
            if outcome is not None:
                self._sized(namespace, cache, status, job, outcome == "Complete", generation)
            return
        if outcome is None:
            if (job.get("status") or {}).get("ready") and status.phase != "Downloading":
                status.phase = status.phase.DOWNLOADING
                mark(status, generation, "Downloading", f"Job {status.job_name} is downloading")
                self.write(namespace, cache["metadata"]["name"], cache["metadata"]["uid"], before, wire(status))
            return
        pods = self.kube.job_pods(namespace, job["metadata"]["name"])
        if outcome == "Complete":
            done = next((p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"), None)
            result = pod_result(done)[1] if done else {}
            nodes = self.kube.claim_nodes(namespace, status.claim_name)
            mark_downloaded(status, cache["spec"]["source"], result, nodes, generation)
        else:
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            exit_code, message = pod_result(failed[-1]) if failed else (None, {})
            reason, text = failure_of(exit_code, message, job)
            mark_failed(status, cache["metadata"]["name"], generation, reason, text, self.settings)
        self.write(namespace, cache["metadata"]["name"], cache["metadata"]["uid"], before, wire(status))

    def _sized(
        self,
        namespace: str,
        cache: dict[str, Any],
        status: ModelCacheStatus,
        job: dict[str, Any],
        complete: bool,
        generation: int,
    ) -> None:
        """A sizing Job finished: create the PVC of that size and the download Job, or fail with the
        reason the Job found (with the credentials: Unauthorized, NotFound, ...)."""
        name, uid = cache["metadata"]["name"], cache["metadata"]["uid"]
        before = status.to_api()
        pods = self.kube.job_pods(namespace, job["metadata"]["name"])
        finished = [p for p in pods if (p.get("status") or {}).get("phase") == ("Succeeded" if complete else "Failed")]
        exit_code, result = pod_result(finished[-1]) if finished else (None, {})
        size = result.get("sizeBytes")
        if complete and isinstance(size, int) and size >= 0:
            status.source_bytes = size
            spec = ModelCacheSpec.model_validate(cache.get("spec") or {})
            update = self._reconciled(namespace, name, uid, spec, generation, status.to_api()).status
            status = ModelCacheStatus.model_validate(update)
        else:
            reason, text = failure_of(exit_code, result, job) if not complete else ("SizingFailed", "")
            text = text or f"sizing Job {job['metadata']['name']} reported no size; set spec.storage.size"
            mark_failed(status, name, generation, reason, text, self.settings)
        self.write(namespace, name, uid, before, wire(status))

    def pod_changed(self, namespace: str, pod: dict[str, Any]) -> None:
        """A Job pod the kubelet cannot start for want of its configuration (the credentials Secret is
        missing or lacks a key) says so on its ModelCache; the kubelet retries on its own once it exists."""
        labels = (pod.get("metadata") or {}).get("labels") or {}
        cache_name, job = labels.get(CACHE_LABEL), labels.get("batch.kubernetes.io/job-name")
        waiting = next(
            (
                (s.get("state") or {}).get("waiting") or {}
                for s in (pod.get("status") or {}).get("containerStatuses") or []
                if ((s.get("state") or {}).get("waiting") or {}).get("reason") == "CreateContainerConfigError"
            ),
            None,
        )
        found = self._cache_of_job(namespace, cache_name, job) if cache_name and job and waiting is not None else None
        if found is None or found[2].phase not in ("Pending", "Downloading"):
            return
        cache, before, status = found
        kubelet = str((waiting or {}).get("message") or "the container's configuration is missing")
        missing = re.search(r'secret "([^"]+)" not found', kubelet)
        if missing:
            reason = "SecretNotFound"
            text = (
                f"spec.credentialsSecretRef: Secret {missing.group(1)} does not exist in {namespace}; create it with "
                f"the credentials as keys (e.g. HF_TOKEN); Job {job} starts once it exists"
            )
        else:
            reason, text = "ContainerConfigError", f"Job {job} cannot start: {kubelet}"
        mark_waiting(status, int(cache["metadata"].get("generation") or 0), reason, text)
        if status.to_api() != ModelCacheStatus.model_validate(before).to_api():  # else said already
            self.write(namespace, cache["metadata"]["name"], cache["metadata"]["uid"], before, wire(status))

    def _cache_of_job(
        self, namespace: str, name: str, job: str
    ) -> tuple[dict[str, Any], dict[str, Any], ModelCacheStatus] | None:
        """The ModelCache, its status as read and parsed, when `job` is its current Job (None when the
        cache is gone or the Job is an older attempt's)."""
        cache = self.kube.read(namespace, name)
        if cache is None:
            return None
        before = dict(cache.get("status") or {})
        status = ModelCacheStatus.model_validate(before)
        return (cache, before, status) if status.job_name == job else None

    # --- retries --------------------------------------------------------------------------------

    def next_attempt(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, status: dict[str, Any],
        why: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        """Start the next attempt's Job (the failed one stays for its logs), write the status and tell it:
        a sizing Job again after a failed sizing, else the claim (made again after an eviction) and a
        download Job. When the API server refuses either (a quota, a policy), the status says why and the
        same attempt is tried again later; a failure the operator sees itself (the hub says the model does
        not exist) is the cache's again. Returns the status written."""
        parsed = ModelCacheStatus.model_validate(status or {})
        attempt = attempt_of(parsed.job_name, generation) + 1
        parsed.phase = parsed.phase.PENDING
        parsed.next_retry_time = None
        try:
            claim = None if is_sizing(parsed.job_name) else self._ensure_claim(namespace, name, uid, spec,
                                                                                parsed.source_bytes)  # fmt: skip
            if claim is None or isinstance(claim, NeedsSizingJob):
                parsed.job_name = self._ensure_sizing_job(namespace, name, uid, spec, generation, attempt)
            else:
                parsed.claim_name = claim
                parsed.job_name = self._ensure_job(namespace, name, uid, spec, generation, attempt)
            mark(parsed, generation, "Retrying", f"attempt {attempt}{why}: Job {parsed.job_name}")
        except Refused as refused:
            reason, message = refused.args
            parsed.next_retry_time = (datetime.now(UTC) + timedelta(seconds=REFUSED_RETRY_SECS)).replace(microsecond=0)
            mark(parsed, generation, reason, f"attempt {attempt}: {message}")
        except DownloadError as exc:
            mark_failed(parsed, name, generation, exc.reason.value, str(exc), self.settings)
        update = wire(parsed)
        self.write(namespace, name, uid, status or {}, update)
        return update

    def requested_retry(self, namespace: str, name: str) -> str:
        """Act on a new value of the retry annotation: a Failed or Evicted cache starts its next attempt
        now (whatever the reason it failed for, and with or without automatic attempts left); in any other
        phase there is nothing to retry, and an Event says so. The value is recorded either way
        (`status.lastHandledRetry`), so the same request is never acted on twice: the cache is read
        afresh first, since the event that asked may be older than the status that answered it.
        Returns what happened: `requested`, `ignored`, or `handled` already."""
        cache = self.kube.read(namespace, name)
        if cache is None:
            return "handled"
        meta, status = cache["metadata"], dict(cache.get("status") or {})
        token = str((meta.get("annotations") or {}).get(RETRY_ANNOTATION) or "")
        parsed = ModelCacheStatus.model_validate(status)
        if not token or token == parsed.last_handled_retry:
            return "handled"
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 0)
        settled = parsed.observed_generation == generation
        if settled and parsed.phase in ("Failed", "Evicted"):
            log.info("ModelCache %s/%s: retry %r requested while %s", namespace, name, token, parsed.phase)
            spec = ModelCacheSpec.model_validate(cache.get("spec") or {})
            # the token goes in with the new attempt's status, so it is never acted on twice
            marked = {**status, "lastHandledRetry": token}
            self.next_attempt(namespace, name, uid, spec, generation, marked, f" (requested by {RETRY_ANNOTATION})")
            return "requested"
        phase = parsed.phase if settled else "being reconciled"
        self.kube.event(namespace, name, uid, "Normal", "RetryIgnored",
                        f"{RETRY_ANNOTATION}={token}: the cache is {phase}; a retry acts on a Failed or Evicted cache")  # fmt: skip
        # only this field: the rest of the status (a planned retry, the Job's progress) stays as it is
        self.kube.merge_status(namespace, name, {"lastHandledRetry": token})
        return "ignored"

    # --- storage --------------------------------------------------------------------------------

    def evict_if_unused(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, status: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:  # fmt: skip
        """Evict the cache if it has been unused too long (`eviction.evict_if_unused`), writing and
        telling the status; the status written, empty when nothing changed."""
        update = eviction.evict_if_unused(self.kube, namespace, name, spec, generation, status, now)
        if update:
            self.write(namespace, name, uid, status or {}, update)
        return update

    def release(self, namespace: str, name: str, spec: ModelCacheSpec) -> str:
        """Apply the retention policy on delete; returns what was done."""
        return eviction.release(self.kube, namespace, name, spec)
