"""Opted-in pods: every event re-decides which of the pod's workers the operator follows.

`on.event` keeps no state on the pods (no finalizers, no annotations written), so the operator
needs only get/list/watch on pods, and a pod deleted while the operator is down leaves nothing
behind: its entries are pruned when the ModelMetadata is next loaded. A scheduled pod's node goes
into its namespace's topology ConfigMap (`topology.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kubernetes.client import ApiException

from modelexpress_operator.runtime import Runtime
from modelexpress_operator.workers import AnnotationError, opted_in


@kopf.on.event("", "v1", "pods")
async def pod_event(
    type: str | None, body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    uid = meta.get("uid")
    if not uid:
        return
    if not opted_in(meta.get("annotations")):
        runtime.fleet.drop_pod(uid)  # cheap when it never was; stops following when the annotation went away
        return
    node = (body.get("spec") or {}).get("nodeName")
    if node and type != "DELETED":  # scheduled: its workers learn their zone and domain before they look for sources
        try:
            await asyncio.to_thread(runtime.recorder.topology.publish, meta["namespace"], node)
        except ApiException as exc:
            logger.warning("node topology of %s not recorded in %s: %s", node, meta["namespace"], exc.reason)
    try:
        followed = runtime.fleet.sync_pod(dict(body), deleted=type == "DELETED")
    except AnnotationError as exc:
        logger.warning("pod %s/%s opted in but is not followed: %s", meta.get("namespace"), meta.get("name"), exc)
        return
    if followed:
        logger.debug("following %d worker(s) of pod %s", len(followed), meta.get("name"))
