"""Pure builders for a ModelCache: its PVC, its sizing and download Jobs, and reading a Job's outcome.

When the operator cannot read the source's size itself (a private or gated repository, an object
store or NGC: anything that needs credentials), a sizing Job runs `modelexpress cache size` with the
credentials Secret in its environment and reports the size in its termination message; the operator
never reads the Secret. The download Job runs `modelexpress cache download` from the worker image with the PVC at `/cache` (the
Hugging Face hub cache layout, so workers mount it read-only with `HF_HUB_CACHE=/cache`). Its
container writes a JSON result to the termination log, which Kubernetes copies into the pod's
status; the operator reads the resolved revision, size and path, or the failure reason, from there.
Exit codes tell the Job controller what to retry: 1 (network, integrity) is retried with the Job's
exponential backoff; 2-5 (invalid source, not found, unauthorized, no space) fail the Job at once
through its pod failure policy, since retrying cannot fix them.
"""

from __future__ import annotations

import json
from typing import Any

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api import ModelCache, ModelCacheSpec
from modelexpress.cache.errors import EXIT_CODES, DownloadError
from modelexpress_operator.settings import OperatorSettings

CACHE_LABEL = f"{API_GROUP}/cache"
STEP_LABEL = f"{API_GROUP}/cache-step"
"""`size` or `download`: which of a ModelCache's Jobs this is."""
MOUNT_PATH = "/cache"
TERMINATION_LOG = "/dev/termination-log"
PERMANENT_EXIT_CODES = sorted({code for reason, code in EXIT_CODES.items() if not DownloadError(reason, "").retryable})
REASONS_BY_EXIT: dict[int, str] = {}
for _reason, _code in EXIT_CODES.items():
    REASONS_BY_EXIT.setdefault(_code, _reason.value)  # 1: NetworkError, the first retryable reason
HEADROOM = 1.10
MIN_PVC_BYTES = 1 << 30


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": ModelCache.KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def claim_name(cache: str, spec: ModelCacheSpec) -> str:
    return spec.storage.claim_name or f"{cache}-cache"


def pvc_size(spec: ModelCacheSpec, source_bytes: int | None) -> str:
    """The requested size: the spec's, else the source's size plus 10 % headroom (at least 1 GiB)."""
    if spec.storage.size is not None:
        return str(spec.storage.size)
    if source_bytes is None:
        raise ValueError("storage.size is unset and the source's size is unknown; set spec.storage.size")
    gib = -(-max(MIN_PVC_BYTES, int(source_bytes * HEADROOM)) // (1 << 30))
    return f"{gib}Gi"


def pvc_manifest(cache: str, uid: str, spec: ModelCacheSpec, size: str) -> dict[str, Any]:
    """A new PVC; owned by the ModelCache (garbage-collected with it) when its retention policy is Delete."""
    metadata: dict[str, Any] = {"name": claim_name(cache, spec), "labels": {CACHE_LABEL: cache}}
    if spec.storage.retention_policy == "Delete":
        metadata["ownerReferences"] = [owner_reference(cache, uid)]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {
            "accessModes": spec.storage.access_modes or ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }
    if spec.storage.storage_class_name:
        body["spec"]["storageClassName"] = spec.storage.storage_class_name
    return body


def _container(name: str, spec: ModelCacheSpec, settings: OperatorSettings, args: list[str]) -> dict[str, Any]:
    env = [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if settings.hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hf_endpoint})
    container: dict[str, Any] = {
        "name": name,
        "image": settings.worker_image,
        "command": [settings.downloader_command],
        "args": args,
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.credentials_secret_ref is not None:
        # A missing Secret keeps the pod from starting (CreateContainerConfigError): the operator reports
        # that from the pod's status, so it needs no read access to Secrets.
        container["envFrom"] = [{"secretRef": {"name": spec.credentials_secret_ref.name}}]
    if spec.resources is not None:
        container["resources"] = spec.resources.to_api()
    return container


def _source_args(spec: ModelCacheSpec) -> list[str]:
    args = [spec.source, "--revision", spec.revision or "main"]
    for pattern in spec.allow_patterns or []:
        args += ["--allow-pattern", pattern]
    for pattern in spec.ignore_patterns or []:
        args += ["--ignore-pattern", pattern]
    return args


def _job(
    cache: str,
    uid: str,
    spec: ModelCacheSpec,
    settings: OperatorSettings,
    job: str,
    step: str,
    container: dict[str, Any],
    pod_spec: dict[str, Any],
) -> dict[str, Any]:
    pod_spec = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
        **pod_spec,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = spec.node_selector
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_api() for t in spec.tolerations]
    labels = {CACHE_LABEL: cache, STEP_LABEL: step}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "labels": labels, "ownerReferences": [owner_reference(cache, uid)]},
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": container["name"],
                            "operator": "In",
                            "values": PERMANENT_EXIT_CODES,
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def job_manifest(
    cache: str,
    namespace: str,
    uid: str,
    spec: ModelCacheSpec,
    settings: OperatorSettings,
    job: str,
    service_account: str | None,
) -> dict[str, Any]:
    """The download Job `job` (one attempt)."""
    args = ["cache", "download", *_source_args(spec), "--cache-directory", MOUNT_PATH]
    args += ["--result-file", TERMINATION_LOG, "--progress-to", f"{namespace}/{cache}", "--format", "json"]
    container = _container("download", spec, settings, args)
    container["env"].insert(0, {"name": "HF_HUB_CACHE", "value": MOUNT_PATH})
    container["volumeMounts"] = [{"name": "cache", "mountPath": MOUNT_PATH}]
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": claim_name(cache, spec)}}]
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    else:
        pod_spec["automountServiceAccountToken"] = False
    return _job(cache, uid, spec, settings, job, "download", container, pod_spec)


def sizing_job_manifest(
    cache: str, uid: str, spec: ModelCacheSpec, settings: OperatorSettings, job: str
) -> dict[str, Any]:
    """The sizing Job `job`: lists the source with the cache's credentials and reports its size in the
    termination message. No volume and no API access: it only reads the source."""
    args = ["cache", "size", *_source_args(spec), "--result-file", TERMINATION_LOG, "--format", "json"]
    container = _container("size", spec, settings, args)
    container["env"].append({"name": "HOME", "value": "/tmp"})  # hub clients may write ~/.cache
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    pod_spec = {"automountServiceAccountToken": False, "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]}
    return _job(cache, uid, spec, settings, job, "size", container, pod_spec)


def is_sizing_job(job: dict[str, Any]) -> bool:
    return (job.get("metadata", {}).get("labels") or {}).get(STEP_LABEL) == "size"


def job_outcome(job: dict[str, Any]) -> str | None:
    """ "Complete", "Failed", or None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return None


def pod_result(pod: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """Exit code and the parsed termination message of a finished Job pod (empty dict if none)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:  # one container per Job pod
            try:
                message = json.loads(terminated.get("message") or "{}")
            except json.JSONDecodeError:
                message = {"message": (terminated.get("message") or "")[-500:]}
            return terminated.get("exitCode"), message if isinstance(message, dict) else {}
    return None, {}


def failure_of(exit_code: int | None, message: dict[str, Any], job: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) of a failed download, from the pod's own report first, else its exit code."""
    reason = message.get("reason") or REASONS_BY_EXIT.get(exit_code or 0)
    text = message.get("message")
    if reason and text:
        return str(reason), str(text)
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed":
            return str(reason or condition.get("reason") or "DownloadFailed"), str(
                condition.get("message") or "the download Job failed"
            )
    return str(reason or "DownloadFailed"), "the download Job failed"
