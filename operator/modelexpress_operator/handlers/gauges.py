"""Gauges of each ModelCache's phase and download progress, from its status as the API server holds it.

Level-triggered on every watch event (the initial listing included), so a restarted operator shows
the same figures at once; no API call is made. A cache's status is written by its Job's pod as much
as by the operator, which is why the figures come from events rather than from the operator's own
writes (the sources of a ModelMetadata, which only the recorder writes, are counted by the recorder).
"""

from __future__ import annotations

from typing import Any

import kopf

from modelexpress import API_GROUP, API_VERSION
from modelexpress_operator.metrics import forget_cache, show_cache


@kopf.on.event(API_GROUP, API_VERSION, "modelcaches")
async def cache_gauges(body: kopf.Body, meta: kopf.Meta, type: str | None, **_: Any) -> None:
    namespace, name = str(meta["namespace"]), str(meta["name"])
    if type == "DELETED":
        forget_cache(namespace, name)
    else:
        show_cache(namespace, name, body.get("status"))
