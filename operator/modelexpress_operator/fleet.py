"""The workers the operator follows: one status-stream task per WorkerService of each opted-in, Ready pod.

Pod events drive it, level-triggered: every event of a pod recomputes the set of its workers to
follow; workers no longer wanted are cancelled and their entries removed at once (pod deleted, not
Ready, being deleted, annotation dropped). Keys are pod UIDs, so a replaced pod of the same name
starts from nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from modelexpress_operator.metrics import WATCHED_WORKERS
from modelexpress_operator.recorder import Recorder
from modelexpress_operator.settings import OperatorSettings
from modelexpress_operator.watcher import follow_worker
from modelexpress_operator.workers import WorkerTarget, pod_targets

log = logging.getLogger(__name__)


class Fleet:
    """Status-stream tasks by pod UID and port."""

    def __init__(self, recorder: Recorder, settings: OperatorSettings) -> None:
        self.recorder = recorder
        self.settings = settings
        self._tasks: dict[str, tuple[WorkerTarget, asyncio.Task[None]]] = {}
        self._by_pod: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def sync_pod(self, pod: Mapping[str, Any], deleted: bool = False) -> list[WorkerTarget]:
        """Follow exactly the workers `pod` should have followed now; returns them.

        Raises AnnotationError (after dropping the pod's workers) when its annotations are unusable.
        """
        uid = pod["metadata"]["uid"]
        try:
            wanted = [] if deleted else pod_targets(pod, self.settings.default_worker_port)
        except ValueError:
            self.drop_pod(uid)
            raise
        if not wanted:
            self.drop_pod(uid)
            return []
        keys = {t.key for t in wanted}
        for key in self._by_pod.get(uid, set()) - keys:
            target, task = self._tasks.pop(key)
            task.cancel()
            self.recorder.forget_target(target)
        for target in wanted:
            current = self._tasks.get(target.key)
            if current is not None and current[0] == target:
                continue
            if current is not None:
                current[1].cancel()  # same pod and port, other IP or pin: dial again
            task = asyncio.get_running_loop().create_task(
                follow_worker(target, self.settings, self.recorder.observe, self.recorder.stale),
                name=f"mx-follow-{target.pod}:{target.port}",
            )
            self._tasks[target.key] = (target, task)
        self._by_pod[uid] = keys
        WATCHED_WORKERS.set(len(self._tasks))
        return wanted

    def drop_pod(self, uid: str) -> None:
        """Stop following the pod's workers and remove their entries now."""
        for key in self._by_pod.pop(uid, set()):
            _target, task = self._tasks.pop(key)
            task.cancel()
        self.recorder.forget_pod(uid)
        WATCHED_WORKERS.set(len(self._tasks))

    async def close(self) -> None:
        tasks = [task for _target, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._by_pod.clear()
        WATCHED_WORKERS.set(0)
