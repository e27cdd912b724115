"""ModelSourceSlice events: the recorder writes again a slice that someone else deleted or edited.

Only the operator writes slices, so every event is either its own write coming back (recognised by its
resourceVersion and ignored) or a change behind its back, which the recorder repairs. Level-triggered
on every event, no state kept on the slices (no finalizers, no annotations).
"""

from __future__ import annotations

from typing import Any

import kopf

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api.modelsourceslice import METADATA_LABEL, ModelSourceSlice
from modelexpress_operator.runtime import Runtime


@kopf.on.event(API_GROUP, API_VERSION, ModelSourceSlice.PLURAL, labels={METADATA_LABEL: kopf.PRESENT})
async def slice_event(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    runtime: Runtime = memo.runtime
    runtime.recorder.slice_event(str(meta["namespace"]), dict(body), deleted=type == "DELETED")
