"""Following one worker's WorkerService status stream (grpc.aio, on the operator's event loop).

The worker is asked for a heartbeat three times per TTL, so silence is detectable: when nothing has
arrived for the TTL (the worker hangs, its node is partitioned, the stream cannot be re-opened),
its entry turns Stale and is never handed out; when it speaks again it is recorded afresh. A
stream that breaks is re-opened with capped exponential backoff while the pod stays Ready.
A worker that reports another pod UID than the pod dialled (an IP reused by a new pod) is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc
from modelexpress.channels import worker_aio_channel
from modelexpress.tokenreview import peer_token_metadata
from modelexpress_operator.metrics import ERRORS
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.workers import WorkerTarget

log = logging.getLogger(__name__)
Observe = Callable[[WorkerTarget, worker_pb2.WorkerStatus], Awaitable[None]]
MarkStale = Callable[[WorkerTarget], None]


async def follow_worker(target: WorkerTarget, settings: OperatorSettings, observe: Observe, stale: MarkStale) -> None:
    """Record `target`'s status until cancelled."""
    ttl = settings.status_ttl_secs
    request = worker_pb2.WatchStatusRequest(heartbeat_ms=int(settings.heartbeat_secs * 1000))
    last_heard = time.monotonic()
    backoff = 0.1
    while True:
        try:
            async with worker_aio_channel(target.endpoint) as channel:
                # Sources that admit authenticated peers only (MX_PEER_AUTH) admit the operator's token.
                stream = worker_pb2_grpc.WorkerServiceStub(channel).WatchStatus(
                    request, metadata=peer_token_metadata(settings.peer_token_file)
                )
                while True:
                    remaining = max(0.05, last_heard + ttl - time.monotonic())
                    try:
                        status = await asyncio.wait_for(stream.read(), timeout=remaining)
                    except TimeoutError:
                        stale(target)
                        stream.cancel()
                        break
                    if status is grpc.aio.EOF:  # type: ignore[attr-defined]
                        break
                    if status.pod_uid and status.pod_uid != target.uid:
                        ERRORS.labels("wrong-pod").inc()
                        log.warning(
                            "%s answers for pod UID %s, not %s (%s): not recorded",
                            target.endpoint,
                            status.pod_uid,
                            target.uid,
                            target.pod,
                        )
                        break
                    last_heard, backoff = time.monotonic(), 0.1
                    try:
                        await observe(target, status)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # e.g. the API server refused a create: retry on the next status
                        ERRORS.labels("record").inc()
                        log.warning("recording %s (pod %s) failed: %s", target.endpoint, target.pod, exc)
        except grpc.aio.AioRpcError as exc:
            log.debug("status stream of %s (%s): %s", target.endpoint, target.pod, exc.code())
        if time.monotonic() - last_heard >= ttl:
            stale(target)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, settings.reconnect_max_secs)
