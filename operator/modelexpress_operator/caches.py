"""Reconciling ModelCaches: PVC, download Job per attempt, and status from the Job's outcome.

Level-triggered: every call looks at what exists (claim, secret, Job) and creates what is missing;
calling it twice creates nothing twice (names are deterministic, 409 means "already there").
Blocking `kubernetes` calls; handlers run them in a thread.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from kubernetes import client

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import RETRY_ANNOTATION, ModelCacheSpec, ModelCacheStatus
from modelexpress.api.common import set_condition
from modelexpress.cache.errors import DownloadError
from modelexpress.cache.huggingface import plan_download
from modelexpress.cache.sources import parse_source
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
from modelexpress_operator.events import post_event
from modelexpress_operator.metrics import API_REQUESTS
from modelexpress_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
PLURAL = "modelcaches"
RETRYABLE = {"NetworkError", "IntegrityError", "BackoffLimitExceeded", "DeadlineExceeded", "DownloadFailed"}
_MERGE = "application/merge-patch+json"
_PROGRESS = {"Sizing", "Downloading", "Retrying", "Downloaded", "Evicted"}
"""Ready reasons that are a cache's normal course; any other is a Warning Event."""
REFUSED_RETRY_SECS = 15
"""Pause before asking the API server again for a Job it refused (as for a refused PVC at creation)."""


def retry_command(name: str) -> str:
    """How a user asks for one more attempt without changing the spec (the retry annotation)."""
    return f'kubectl annotate mxcache {name} {RETRY_ANNOTATION}="$(date +%s)" --overwrite'


class WaitingError(Exception):
    """Something the cache needs is missing; the status says what, and the handler retries later."""


class SizingNeeded(Exception):  # noqa: N818 - a branch of the reconcile, not an error
    """The operator cannot read the source's size without credentials: a sizing Job reads it."""


def _job_name(cache: str, generation: int, attempt: int) -> str:
    return f"{cache[:40]}-dl-g{generation}-{attempt}"


def _sizing_job_name(cache: str, generation: int, attempt: int) -> str:
    return f"{cache[:40]}-size-g{generation}-{attempt}"


def _is_sizing(job: str | None) -> bool:
    return "-size-g" in (job or "")


def _ready(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def api_refusal(exc: client.ApiException, what: str) -> tuple[str, str]:
    """(reason, message) of a request the API server refused: its own Status reason (Forbidden,
    Invalid, ...) and message, e.g. an exceeded ResourceQuota or a policy that rejects the object."""
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    reason = re.sub(r"[^A-Za-z0-9]", "", str(body.get("reason") or exc.reason or "")) or "ApiError"
    if not reason[0].isalpha():
        reason = "ApiError"
    message = str(body.get("message") or exc.reason or "no message")
    return reason, f"{what} was refused by the API server (HTTP {exc.status}): {message}; retried"


def _wire(status: ModelCacheStatus) -> dict[str, Any]:
    """The status as the operator writes it (a merge patch): `nextRetryTime`, which only the operator
    writes, is sent as null once cleared; absent fields are left alone (the Job's pod writes `progress`)."""
    return {"nextRetryTime": None, **status.to_api()}


def attempt_of(job: str | None, generation: int) -> int:
    match = re.search(rf"-(?:dl|size)-g{generation}-(\d+)$", job or "")
    return int(match.group(1)) if match else 0


class CacheController:
    def __init__(self, api: client.ApiClient, settings: OperatorSettings) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.settings = settings

    def announce(self, namespace: str, name: str, uid: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        """An Event when the Ready condition's reason changes (a phase change, a failure, a retry, an
        eviction), with the condition's message; Warning when the cache failed or waits on something to
        fix (a refused request, a missing Secret), Normal for its progress. Level-triggered reconciles
        that change nothing post nothing."""
        old, new = _ready(before), _ready(after)
        if new is None or (
            old is not None and (old.get("reason"), old.get("message")) == (new.get("reason"), new.get("message"))
        ):
            return
        kind = "Normal" if after.get("phase") != "Failed" and new.get("reason") in _PROGRESS else "Warning"
        self._event(namespace, name, uid, kind, str(new.get("reason") or "Unknown"), str(new.get("message") or ""))

    def _event(self, namespace: str, name: str, uid: str, kind: str, reason: str, message: str) -> None:
        involved = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "ModelCache", "name": name,
                    "namespace": namespace, "uid": uid}  # fmt: skip
        post_event(self.api, involved, kind, reason, message)

    # --- spec -> PVC + Job ----------------------------------------------------------------------

    def reconcile(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, current: dict[str, Any]
    ) -> dict[str, Any]:
        """The status after making sure the claim and this generation's Job exist."""
        status = ModelCacheStatus.model_validate(current or {})
        if status.phase in ("Ready", "Failed", "Evicted") and status.observed_generation == generation:
            return {}  # this generation is settled; Job events, the retry and eviction daemons take it from here
        if status.observed_generation != generation:
            status.source_bytes = None  # read for another spec
            status.next_retry_time = None  # planned for another spec
        status.observed_generation = generation
        try:
            claim = self._ensure_claim(namespace, name, uid, spec, status.source_bytes)
            attempt = max(1, attempt_of(status.job_name, generation)) if not _is_sizing(status.job_name) else 1
            job = self._ensure_job(namespace, name, uid, spec, generation, attempt)
        except WaitingError as exc:
            return self._waiting(status, generation, *exc.args)
        except DownloadError as exc:
            return self._failed(status, name, generation, exc.reason.value, str(exc))
        except SizingNeeded as exc:
            attempt = max(1, attempt_of(status.job_name, generation)) if _is_sizing(status.job_name) else 1
            try:
                status.job_name = self._ensure_sizing_job(namespace, name, uid, spec, generation, attempt)
            except WaitingError as refused:
                return self._waiting(status, generation, *refused.args)
            status.phase = status.phase.PENDING
            status.conditions = set_condition(
                status.conditions, "Ready", "False", "Sizing", f"{exc}: Job {status.job_name} reads it", generation
            )
            return _wire(status)
        status.claim_name, status.job_name = claim, job
        status.phase = status.phase.PENDING if status.phase != "Downloading" else status.phase
        status.conditions = set_condition(
            status.conditions, "Ready", "False", "Downloading", f"download Job {job} started", generation
        )
        return _wire(status)

    def _waiting(self, status: ModelCacheStatus, generation: int, reason: str, message: str) -> dict[str, Any]:
        status.phase = status.phase.PENDING
        status.conditions = set_condition(status.conditions, "Ready", "False", reason, message, generation)
        raise _Retry(_wire(status), message)

    def _failed(
        self, status: ModelCacheStatus, name: str, generation: int, reason: str, message: str
    ) -> dict[str, Any]:
        self._fail(status, name, generation, reason, message)
        return _wire(status)

    def _fail(self, status: ModelCacheStatus, name: str, generation: int, reason: str, message: str) -> None:
        """Phase Failed with its reason; after a retryable failure with attempts left, the next Job is
        planned `MX_OPERATOR_RETRY_INTERVAL_SECS` from now (`nextRetryTime`) and the message says so."""
        status.phase = status.phase.FAILED
        status.next_retry_time = None
        if reason in RETRYABLE and status.job_name:
            attempt, limit = attempt_of(status.job_name, generation), self.settings.retry_limit
            if attempt < limit:
                delay = self.settings.retry_interval_secs
                status.next_retry_time = (datetime.now(UTC) + timedelta(seconds=delay)).replace(microsecond=0)
                message = f"{message}; attempt {attempt + 1} of {limit} starts in {delay:g}s"
            else:
                message = (
                    f"{message}; no attempt left (MX_OPERATOR_RETRY_LIMIT={limit}): "
                    f"fix the cause, then try again with `{retry_command(name)}`"
                )
        else:
            message = f"{message}; once fixed, try again with `{retry_command(name)}` (or change the spec)"
        status.conditions = set_condition(status.conditions, "Ready", "False", reason, message, generation)

    def _source_bytes(self, spec: ModelCacheSpec) -> int:
        """The source's size as the operator can read it (anonymously, a public hub repository); else
        SizingNeeded, or the failure with its own reason (NotFound, Unauthorized, NetworkError, ...)."""
        source = parse_source(spec.source)
        if source.provider != "hf":
            raise SizingNeeded(f"the size of {spec.source} needs the Job's credentials")
        endpoint = self.settings.hf_endpoint or os.environ.get("HF_ENDPOINT") or None
        try:
            plan = plan_download(
                source.name, spec.revision or "main", spec.allow_patterns, spec.ignore_patterns, None, endpoint
            )
        except DownloadError as exc:
            if exc.reason.value == "Unauthorized" and spec.credentials_secret_ref is not None:
                raise SizingNeeded(
                    f"{spec.source} is not public; its size is read with Secret {spec.credentials_secret_ref.name}"
                ) from None
            if exc.retryable:
                raise WaitingError(
                    exc.reason.value,
                    f"reading the size of {spec.source} failed, retried: {exc}; or set spec.storage.size",
                ) from None
            raise
        return plan.total_bytes

    def _ensure_claim(self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, source_bytes: int | None) -> str:
        claim = claim_name(name, spec)
        try:
            API_REQUESTS.labels("get", "persistentvolumeclaims").inc()
            self.core.read_namespaced_persistent_volume_claim(claim, namespace)
            return claim
        except client.ApiException as exc:
            if exc.status != 404:
                raise WaitingError(*api_refusal(exc, f"reading PersistentVolumeClaim {claim}")) from None
        if spec.storage.claim_name:
            raise WaitingError(
                "ClaimNotFound", f"spec.storage.claimName: PersistentVolumeClaim {claim} does not exist in {namespace}"
            )
        if spec.storage.size is None and source_bytes is None:
            source_bytes = self._source_bytes(spec)
        body = pvc_manifest(name, uid, spec, pvc_size(spec, source_bytes))
        try:
            API_REQUESTS.labels("create", "persistentvolumeclaims").inc()
            self.core.create_namespaced_persistent_volume_claim(namespace, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise WaitingError(*api_refusal(exc, f"creating PersistentVolumeClaim {claim}")) from None
        return claim

    def _service_account(self, namespace: str) -> str | None:
        try:
            API_REQUESTS.labels("get", "serviceaccounts").inc()
            self.core.read_namespaced_service_account(self.settings.job_service_account, namespace)
            return self.settings.job_service_account
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _ensure_job(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, attempt: int
    ) -> str:
        job = _job_name(name, generation, attempt)
        body = job_manifest(name, namespace, uid, spec, self.settings, job, self._service_account(namespace))
        return self._create_job(namespace, body, "download")

    def _ensure_sizing_job(
        self, namespace: str, name: str, uid: str, spec: ModelCacheSpec, generation: int, attempt: int
    ) -> str:
        job = _sizing_job_name(name, generation, attempt)
        return self._create_job(namespace, sizing_job_manifest(name, uid, spec, self.settings, job), "sizing")

    def _create_job(self, namespace: str, body: dict[str, Any], step: str) -> str:
        """Create the Job (it may exist already: names are deterministic); its name."""
        job = str(body["metadata"]["name"])
        try:
            API_REQUESTS.labels("create", "jobs").inc()
            self.batch.create_namespaced_job(namespace, body)
            log.info("created %s Job %s/%s", step, namespace, job)
        except client.ApiException as exc:
            if exc.status != 409:
                raise WaitingError(*api_refusal(exc, f"creating {step} Job {job}")) from None
        return job

    # --- Job -> status --------------------------------------------------------------------------

    def job_changed(self, namespace: str, job: dict[str, Any]) -> None:
        """Fold a download Job's state into its ModelCache's status."""
        cache_name = (job["metadata"].get("labels") or {}).get(CACHE_LABEL)
        if not cache_name:
            return
        found = self._cache_of_job(namespace, cache_name, job["metadata"]["name"])
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
                status.conditions = set_condition(
                    status.conditions,
                    "Ready",
                    "False",
                    "Downloading",
                    f"Job {status.job_name} is downloading",
                    generation,
                )
                self._patch(namespace, cache_name, status)
                self.announce(namespace, cache_name, cache["metadata"]["uid"], before, status.to_api())
            return
        pods = self._job_pods(namespace, job["metadata"]["name"])
        if outcome == "Complete":
            done = next((p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"), None)
            _, result = pod_result(done) if done else (None, {})
            status.phase = status.phase.READY
            status.resolved_revision = result.get("resolvedRevision")
            status.size_bytes = result.get("sizeBytes")
            status.path = result.get("relativePath")  # relative to the volume's root, wherever it is mounted
            status.nodes = self._claim_nodes(namespace, status.claim_name)
            total = status.size_bytes or (status.progress.bytes_total if status.progress else None)
            status.progress = status.progress or None
            if status.progress is not None and total is not None:
                status.progress.bytes_done, status.progress.percent = total, 100
            status.last_used_time = datetime.now(UTC).replace(microsecond=0)
            revision = (status.resolved_revision or "?")[:12]
            status.conditions = set_condition(
                status.conditions,
                "Ready",
                "True",
                "Downloaded",
                f"{cache['spec']['source']}@{revision} is on {status.claim_name}",
                generation,
            )
        else:
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            exit_code, message = pod_result(failed[-1]) if failed else (None, {})
            reason, text = failure_of(exit_code, message, job)
            self._fail(status, cache_name, generation, reason, text)
        self._patch(namespace, cache_name, status)
        self.announce(namespace, cache_name, cache["metadata"]["uid"], before, status.to_api())

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
        pods = self._job_pods(namespace, job["metadata"]["name"])
        finished = [p for p in pods if (p.get("status") or {}).get("phase") == ("Succeeded" if complete else "Failed")]
        exit_code, result = pod_result(finished[-1]) if finished else (None, {})
        size = result.get("sizeBytes")
        if complete and isinstance(size, int) and size >= 0:
            status.source_bytes = size
            spec = ModelCacheSpec.model_validate(cache.get("spec") or {})
            try:
                update = self.reconcile(namespace, name, uid, spec, generation, status.to_api())
            except _Retry as waiting:
                update = waiting.status
            status = ModelCacheStatus.model_validate(update)
        else:
            reason, text = failure_of(exit_code, result, job) if not complete else ("SizingFailed", "")
            text = text or f"sizing Job {job['metadata']['name']} reported no size; set spec.storage.size"
            self._fail(status, name, generation, reason, text)
        self._patch(namespace, name, status)
        self.announce(namespace, name, uid, before, status.to_api())

    def pod_changed(self, namespace: str, pod: dict[str, Any]) -> None:
        """A Job pod the kubelet cannot start for want of its configuration (the credentials Secret is
        missing or lacks a key) says so on its ModelCache; the kubelet retries on its own once it exists."""
        labels = (pod.get("metadata") or {}).get("labels") or {}
        cache_name, job_name = labels.get(CACHE_LABEL), labels.get("batch.kubernetes.io/job-name")
        waiting = next(
            (
                (s.get("state") or {}).get("waiting") or {}
                for s in (pod.get("status") or {}).get("containerStatuses") or []
                if ((s.get("state") or {}).get("waiting") or {}).get("reason") == "CreateContainerConfigError"
            ),
            None,
        )
        if not cache_name or not job_name or waiting is None:
            return
        found = self._cache_of_job(namespace, cache_name, job_name)
        if found is None or found[2].phase not in ("Pending", "Downloading"):
            return
        cache, before, status = found
        kubelet = str(waiting.get("message") or "the container's configuration is missing")
        missing = re.search(r'secret "([^"]+)" not found', kubelet)
        if missing:
            reason = "SecretNotFound"
            text = (
                f"spec.credentialsSecretRef: Secret {missing.group(1)} does not exist in {namespace}; create it with "
                f"the credentials as keys (e.g. HF_TOKEN); Job {job_name} starts once it exists"
            )
        else:
            reason, text = "ContainerConfigError", f"Job {job_name} cannot start: {kubelet}"
        generation = int(cache["metadata"].get("generation") or 0)
        status.phase = status.phase.PENDING
        status.conditions = set_condition(status.conditions, "Ready", "False", reason, text, generation)
        if status.to_api() == ModelCacheStatus.model_validate(before).to_api():
            return  # said already
        self._patch(namespace, cache_name, status)
        self.announce(namespace, cache_name, cache["metadata"]["uid"], before, status.to_api())

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ModelCache as the API server has it now (None when it is gone)."""
        API_REQUESTS.labels("get", "modelcaches").inc()
        try:
            return cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name),
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _cache_of_job(
        self, namespace: str, name: str, job: str
    ) -> tuple[dict[str, Any], dict[str, Any], ModelCacheStatus] | None:
        """The ModelCache, its status as read and parsed, when `job` is its current Job (None when the
        cache is gone or the Job is an older attempt's)."""
        cache = self._read(namespace, name)
        if cache is None:
            return None
        before = dict(cache.get("status") or {})
        status = ModelCacheStatus.model_validate(before)
        return (cache, before, status) if status.job_name == job else None

    def _claim_nodes(self, namespace: str, claim: str | None) -> list[str]:
        """The nodes a node-local volume is pinned to (its PersistentVolume's required node affinity on
        the hostname label); none for network storage or a claim not bound (yet)."""
        if not claim:
            return []
        try:
            bound = self.core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
            volume = self.core.read_persistent_volume(bound) if bound else None
        except client.ApiException as exc:
            log.debug("volume of %s/%s not read (%s): no nodes recorded", namespace, claim, exc.reason)
            return []
        required = volume.spec.node_affinity.required if volume and volume.spec.node_affinity else None
        nodes = {
            value
            for term in (required.node_selector_terms if required else None) or []
            for expression in term.match_expressions or []
            if expression.key == "kubernetes.io/hostname" and expression.operator == "In"
            for value in expression.values or []
        }
        return sorted(nodes)

    def _job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        API_REQUESTS.labels("list", "pods").inc()
        reply = self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job}", _preload_content=False
        )
        items: list[dict[str, Any]] = json.loads(reply.data).get("items", [])
        return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge `status` into the ModelCache's status (what a daemon decided)."""
        self._patch(namespace, name, ModelCacheStatus.model_validate(status))

    def _patch(self, namespace: str, name: str, status: ModelCacheStatus) -> None:
        self._merge_status(namespace, name, _wire(status))

    def _merge_status(self, namespace: str, name: str, fields: dict[str, Any]) -> None:
        """Merge-patch `fields` into the ModelCache's status; the fields not named are left as they are."""
        API_REQUESTS.labels("patch", "modelcaches/status").inc()
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": fields}, _content_type=_MERGE
        )

    # --- retries and deletion -------------------------------------------------------------------

    def retry_due(self, status: dict[str, Any], generation: int, now: datetime) -> float | None:
        """Seconds until the planned retry of this generation (0: now); None when none is planned (a
        plan is only ever made with an attempt left, or for a retry the API server refused)."""
        parsed = ModelCacheStatus.model_validate(status or {})
        if (
            parsed.next_retry_time is None
            or parsed.observed_generation != generation
            or parsed.phase not in ("Failed", "Pending")
        ):
            return None
        return max(0.0, (parsed.next_retry_time - now).total_seconds())

    def retry(
        self,
        namespace: str,
        name: str,
        uid: str,
        spec: ModelCacheSpec,
        generation: int,
        status: dict[str, Any],
        why: str = "",
    ) -> dict[str, Any]:
        """The next attempt's Job (the failed one stays for its logs): a sizing Job again after a failed
        sizing, else the claim (made again after an eviction) and a download Job. When the API server
        refuses either (a quota, a policy), the status says why and the same attempt is tried again later;
        a failure the operator sees itself (the hub says the model does not exist) is the cache's again."""
        parsed = ModelCacheStatus.model_validate(status or {})
        attempt = attempt_of(parsed.job_name, generation) + 1
        parsed.phase = parsed.phase.PENDING
        parsed.next_retry_time = None
        try:
            if _is_sizing(parsed.job_name):
                parsed.job_name = self._ensure_sizing_job(namespace, name, uid, spec, generation, attempt)
            else:
                try:
                    parsed.claim_name = self._ensure_claim(namespace, name, uid, spec, parsed.source_bytes)
                    parsed.job_name = self._ensure_job(namespace, name, uid, spec, generation, attempt)
                except SizingNeeded:
                    parsed.job_name = self._ensure_sizing_job(namespace, name, uid, spec, generation, attempt)
        except WaitingError as refused:
            reason, message = refused.args
            parsed.next_retry_time = (datetime.now(UTC) + timedelta(seconds=REFUSED_RETRY_SECS)).replace(microsecond=0)
            parsed.conditions = set_condition(
                parsed.conditions, "Ready", "False", reason, f"attempt {attempt}: {message}", generation
            )
            return _wire(parsed)
        except DownloadError as exc:
            return self._failed(parsed, name, generation, exc.reason.value, str(exc))
        parsed.conditions = set_condition(
            parsed.conditions,
            "Ready",
            "False",
            "Retrying",
            f"attempt {attempt}{why}: Job {parsed.job_name}",
            generation,
        )
        return _wire(parsed)

    def requested_retry(self, namespace: str, name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Act on a new value of the retry annotation: a Failed or Evicted cache starts its next attempt
        now (whatever the reason it failed for, and with or without automatic attempts left); in any other
        phase there is nothing to retry, and an Event says so. The value is recorded either way
        (`status.lastHandledRetry`), so the same request is never acted on twice: the cache is read
        afresh first, since the event that asked may be older than the status that answered it.
        Returns what happened (`requested`, `ignored`, or `handled` already), the status before and the
        status written (for `announce`)."""
        cache = self._read(namespace, name)
        if cache is None:
            return "handled", {}, {}
        meta, status = cache["metadata"], dict(cache.get("status") or {})
        token = str((meta.get("annotations") or {}).get(RETRY_ANNOTATION) or "")
        parsed = ModelCacheStatus.model_validate(status)
        if not token or token == parsed.last_handled_retry:
            return "handled", status, status
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 0)
        settled = parsed.observed_generation == generation
        if settled and parsed.phase in ("Failed", "Evicted"):
            log.info("ModelCache %s/%s: retry %r requested while %s", namespace, name, token, parsed.phase)
            spec = ModelCacheSpec.model_validate(cache.get("spec") or {})
            update = self.retry(namespace, name, uid, spec, generation, status, f" (requested by {RETRY_ANNOTATION})")
            update["lastHandledRetry"] = token
            self.write_status(namespace, name, update)
            return "requested", status, update
        phase = parsed.phase if settled else "being reconciled"
        self._event(namespace, name, uid, "Normal", "RetryIgnored",
                    f"{RETRY_ANNOTATION}={token}: the cache is {phase}; a retry acts on a Failed or Evicted cache")  # fmt: skip
        # only this field: the rest of the status (a planned retry, the Job's progress) stays as it is
        self._merge_status(namespace, name, {"lastHandledRetry": token})
        return "ignored", status, {**status, "lastHandledRetry": token}

    def evict_if_unused(
        self, namespace: str, name: str, spec: ModelCacheSpec, generation: int, status: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Evict a Ready cache unused for longer than `eviction.unusedThreshold` (never a pinned one, never
        one a live pod mounts: that refreshes `lastUsedTime` instead): its PVC goes (when the operator
        created it) and the phase becomes Evicted. Empty when nothing changes."""
        threshold = spec.eviction.unused_threshold
        parsed = ModelCacheStatus.model_validate(status or {})
        if threshold is None or spec.eviction.pinned or parsed.phase != "Ready" or parsed.last_used_time is None:
            return {}
        idle = now - parsed.last_used_time
        if idle <= threshold:
            return {}
        users = self._claim_users(namespace, parsed.claim_name)
        if users:
            # Mounted by a live pod: in use, whatever the clock says. Record the use instead.
            parsed.last_used_time = now.replace(microsecond=0)
            log.info("ModelCache %s/%s is in use by %s; not evicted", namespace, name, ", ".join(users[:3]))
            return _wire(parsed)
        self._delete_jobs(namespace, name)  # their finished pods would hold the volume (pvc-protection)
        released = self.release(namespace, name, spec)
        parsed.phase = parsed.phase.EVICTED
        parsed.conditions = set_condition(
            parsed.conditions,
            "Ready",
            "False",
            "Evicted",
            f"unused for {int(idle.total_seconds())}s (eviction.unusedThreshold {int(threshold.total_seconds())}s); "
            f"{released}; download it again with `{retry_command(name)}`",
            generation,
        )
        return _wire(parsed)

    def _claim_users(self, namespace: str, claim: str | None) -> list[str]:
        """Live pods (not our download Jobs') that mount the claim."""
        if not claim:
            return []
        API_REQUESTS.labels("list", "pods").inc()
        users = []
        for pod in self.core.list_namespaced_pod(namespace).items:
            if (pod.status.phase if pod.status else None) in ("Succeeded", "Failed"):
                continue
            if CACHE_LABEL in (pod.metadata.labels or {}):
                continue
            for volume in pod.spec.volumes or []:
                if volume.persistent_volume_claim and volume.persistent_volume_claim.claim_name == claim:
                    users.append(pod.metadata.name)
                    break
        return users

    def _delete_jobs(self, namespace: str, name: str) -> None:
        """Delete this cache's Jobs one by one (`delete` on Jobs the operator labelled and owns, rather
        than `deletecollection`, which would let one request remove every Job of a namespace)."""
        API_REQUESTS.labels("list", "jobs").inc()
        for job in self.batch.list_namespaced_job(namespace, label_selector=f"{CACHE_LABEL}={name}").items:
            API_REQUESTS.labels("delete", "jobs").inc()
            try:
                self.batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
            except client.ApiException as exc:
                if exc.status != 404:
                    raise

    def release(self, namespace: str, name: str, spec: ModelCacheSpec) -> str:
        """Apply the retention policy on delete; returns what was done."""
        if spec.storage.claim_name:
            return f"kept PersistentVolumeClaim {spec.storage.claim_name} (not created by the operator)"
        claim = claim_name(name, spec)
        if spec.storage.retention_policy == "Retain":
            return f"kept PersistentVolumeClaim {claim} (retentionPolicy Retain)"
        try:
            API_REQUESTS.labels("delete", "persistentvolumeclaims").inc()
            self.core.delete_namespaced_persistent_volume_claim(claim, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        return f"deleted PersistentVolumeClaim {claim}"


class _Retry(Exception):  # noqa: N818 - carries the status to write, not an error
    def __init__(self, status: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.status = status
