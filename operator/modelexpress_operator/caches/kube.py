"""The Kubernetes I/O of ModelCaches: the cache and its status, its claim, its Jobs and their pods, the
volume's nodes, the pods that mount it. Blocking `kubernetes` calls (handlers run them in a thread);
a request the API server refuses where the cache waits on it raises `Refused` with its reason."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from kubernetes import client

from modelexpress import API_GROUP, API_VERSION
from modelexpress_operator.cachejobs import CACHE_LABEL
from modelexpress_operator.caches.refusals import Refused, api_refusal
from modelexpress_operator.events import post_event
from modelexpress_operator.metrics import API_REQUESTS

log = logging.getLogger(__name__)
PLURAL = "modelcaches"
_MERGE = "application/merge-patch+json"


class CacheApi:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
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

    def merge_status(self, namespace: str, name: str, fields: dict[str, Any]) -> None:
        """Merge-patch `fields` into the ModelCache's status; the fields not named are left as they are."""
        API_REQUESTS.labels("patch", "modelcaches/status").inc()
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": fields}, _content_type=_MERGE
        )

    def event(self, namespace: str, name: str, uid: str, kind: str, reason: str, message: str) -> None:
        involved = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "ModelCache", "name": name,
                    "namespace": namespace, "uid": uid}  # fmt: skip
        post_event(self.api, involved, kind, reason, message)

    def claim_exists(self, namespace: str, claim: str) -> bool:
        try:
            API_REQUESTS.labels("get", "persistentvolumeclaims").inc()
            self.core.read_namespaced_persistent_volume_claim(claim, namespace)
            return True
        except client.ApiException as exc:
            if exc.status != 404:
                raise Refused(*api_refusal(exc, f"reading PersistentVolumeClaim {claim}")) from None
            return False

    def create_claim(self, namespace: str, body: dict[str, Any]) -> None:
        """Create the claim (it may exist already: its name is deterministic)."""
        try:
            API_REQUESTS.labels("create", "persistentvolumeclaims").inc()
            self.core.create_namespaced_persistent_volume_claim(namespace, body)
        except client.ApiException as exc:
            if exc.status != 409:
                claim = body["metadata"]["name"]
                raise Refused(*api_refusal(exc, f"creating PersistentVolumeClaim {claim}")) from None

    def delete_claim(self, namespace: str, claim: str) -> None:
        try:
            API_REQUESTS.labels("delete", "persistentvolumeclaims").inc()
            self.core.delete_namespaced_persistent_volume_claim(claim, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def service_account(self, namespace: str, name: str) -> str | None:
        """`name` when that ServiceAccount exists in the namespace, else None."""
        try:
            API_REQUESTS.labels("get", "serviceaccounts").inc()
            self.core.read_namespaced_service_account(name, namespace)
            return name
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, namespace: str, body: dict[str, Any], step: str) -> str:
        """Create the Job (it may exist already: names are deterministic); its name."""
        job = str(body["metadata"]["name"])
        try:
            API_REQUESTS.labels("create", "jobs").inc()
            self.batch.create_namespaced_job(namespace, body)
            log.info("created %s Job %s/%s", step, namespace, job)
        except client.ApiException as exc:
            if exc.status != 409:
                raise Refused(*api_refusal(exc, f"creating {step} Job {job}")) from None
        return job

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods, oldest first."""
        API_REQUESTS.labels("list", "pods").inc()
        reply = self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job}", _preload_content=False
        )
        items: list[dict[str, Any]] = json.loads(reply.data).get("items", [])
        return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])

    def delete_jobs(self, namespace: str, name: str) -> None:
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

    def claim_nodes(self, namespace: str, claim: str | None) -> list[str]:
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

    def claim_users(self, namespace: str, claim: str | None) -> list[str]:
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
