"""The operator's long-lived parts, built once at start-up and shared by every handler through kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import kopf
from kubernetes import client

from modelexpress_operator.caches import CacheController
from modelexpress_operator.fleet import Fleet
from modelexpress_operator.kube import api_client
from modelexpress_operator.leadership import AlwaysLeader, PeeringLeadership
from modelexpress_operator.recorder import Recorder
from modelexpress_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: OperatorSettings
    api: client.ApiClient
    recorder: Recorder
    fleet: Fleet
    leadership: AlwaysLeader | PeeringLeadership
    caches: CacheController
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def start(cls, settings: OperatorSettings, kopf_settings: kopf.OperatorSettings) -> Runtime:
        peering = kopf_settings.peering
        api = api_client()
        leadership: AlwaysLeader | PeeringLeadership
        if peering.standalone:
            leadership = AlwaysLeader()
        else:
            holder: list[Runtime] = []

            async def lost() -> None:
                if holder:
                    await holder[0].stand_down()

            leadership = PeeringLeadership(
                api,
                peering.name,
                None if peering.clusterwide else settings.peering_namespace,
                peering.priority,
                peering.mandatory,
                lost,
            )
        recorder = Recorder(api, settings, leadership)
        runtime = cls(settings, api, recorder, Fleet(recorder, settings), leadership, CacheController(api, settings))
        if isinstance(leadership, PeeringLeadership):
            holder.append(runtime)
            runtime.tasks.append(asyncio.get_running_loop().create_task(leadership.run(), name="mx-leadership"))
        return runtime

    async def stand_down(self) -> None:
        """Stop following workers and writing status; the leader (maybe us again later) rebuilds it."""
        await self.fleet.close()
        await self.recorder.close()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stand_down()
        self.api.close()
