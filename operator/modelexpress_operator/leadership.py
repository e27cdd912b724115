"""Which replica writes: kopf peering decides, and this mirrors its decision for our own tasks.

kopf pauses its watches in every replica but the highest-priority live one, so handlers only run
in the leader. The status-stream tasks and status writers started by those handlers are ours,
though, and would keep writing after a higher-priority replica appears. This watchdog reads the
same peering object with kopf's rule (no live peer of higher priority, none of equal priority but
us) and, when this replica stops being the leader, stops every writer at once. On becoming the
leader again kopf re-lists the pods, which starts the tasks afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from kubernetes import client

from modelexpress_operator.metrics import API_REQUESTS, LEADER

log = logging.getLogger(__name__)
KOPF_GROUP, KOPF_VERSION = "kopf.dev", "v1"


def is_leader(peers: Mapping[str, Mapping[str, Any]], priority: int, now: datetime | None = None) -> bool:
    """kopf's rule over a peering object's status: nobody alive outranks or ties with `priority` (self aside)."""
    now = now or datetime.now(UTC)
    tied = 0
    for info in peers.values():
        if not isinstance(info, Mapping):
            continue
        lastseen = info.get("lastseen")
        seen = datetime.fromisoformat(lastseen) if isinstance(lastseen, str) else now
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if seen + timedelta(seconds=int(info.get("lifetime", 60))) <= now:
            continue  # dead peers do not count
        peer_priority = int(info.get("priority", 0))
        if peer_priority > priority:
            return False
        tied += peer_priority == priority
    return tied <= 1  # our own entry is one of them


class AlwaysLeader:
    """Standalone mode: the only replica."""

    active = True


class PeeringLeadership:
    """Polls the peering object and tracks whether this replica is the active one."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespace: str | None,
        priority: int,
        mandatory: bool,
        on_lost: Callable[[], Awaitable[None]],
        interval: float = 2.0,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.name, self.namespace, self.priority, self.mandatory = name, namespace, priority, mandatory
        self.on_lost = on_lost
        self.interval = interval
        self.active = True  # kopf only starts handlers in a leader; the first poll confirms it
        LEADER.set(1)

    def _peers(self) -> dict[str, Any] | None:
        try:
            if self.namespace:
                API_REQUESTS.labels("get", "kopfpeerings").inc()
                body = self.custom.get_namespaced_custom_object(
                    KOPF_GROUP, KOPF_VERSION, self.namespace, "kopfpeerings", self.name
                )
            else:
                API_REQUESTS.labels("get", "clusterkopfpeerings").inc()
                body = self.custom.get_cluster_custom_object(KOPF_GROUP, KOPF_VERSION, "clusterkopfpeerings", self.name)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cast(dict[str, Any], body).get("status") or {})

    async def run(self) -> None:
        while True:
            try:
                peers = await asyncio.to_thread(self._peers)
                leader = (not self.mandatory) if peers is None else is_leader(peers, self.priority)
            except Exception as exc:
                log.warning("reading peering %s failed: %s", self.name, exc)
                leader = self.active
            if leader != self.active:
                self.active = leader
                LEADER.set(int(leader))
                log.info(
                    "this replica %s the active operator (priority %d)",
                    "is now" if leader else "is no longer",
                    self.priority,
                )
                if not leader:
                    await self.on_lost()
            await asyncio.sleep(self.interval)
