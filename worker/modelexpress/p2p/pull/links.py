"""Connecting to sources before the target's tensors exist: the part of a pull that needs no layout.

A link to a source is its status (Ready, and the pod the registry recorded), its manifest (under the
same identity), its NIXL agent metadata and the NIXL connection to it. None of that depends on the
target's memory, so an engine can have it done while it still builds its model (`prepare_sources`
in a background thread); `pull(..., prepared=...)` then only matches layouts and READs.

A source's status stream is followed from the moment it is linked: if it ends (the source died or
drains) the reason is kept in `Deaths`, which the pull reads as it goes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelexpress.p2p.client import STATE_NAMES, SourceUnavailableError, WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.nixl_engine import NixlEngine, TransferError

log = logging.getLogger(__name__)
LINK_ERRORS = (SourceUnavailableError, TransferError, ValueError)
"""What linking a source raises when that source cannot be used (the pull goes on without it)."""


class Deaths:
    """Sources whose status stream ended, with why; written by the streams' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}

    def mark(self, endpoint: str, reason: str) -> None:
        with self._lock:
            self._reasons.setdefault(endpoint, reason)

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reasons)


@dataclass
class SourceLink:
    """A Ready source of the same identity, connected: what is left is matching its tensors."""

    endpoint: str
    client: WorkerClient
    manifest: Manifest
    remote_agent: str


def link_source(
    endpoint: str,
    identity: WorkerIdentity,
    engine: NixlEngine,
    deaths: Deaths,
    timeout: float,
    expected_pod: str | None = None,
) -> SourceLink:
    """Status, manifest, identity check, agent metadata and the NIXL connection of one source; raises
    one of LINK_ERRORS (the client closed) when it cannot be used."""
    client = WorkerClient(endpoint, timeout=timeout)
    try:
        # the three questions go out together, so their round trips overlap: the status decides, and
        # on a refusal closing the client cancels the other two
        manifest_asked = client.ask_manifest()
        metadata_asked = client.ask_agent_metadata()
        status = client.attach(functools.partial(deaths.mark, endpoint))
        state = STATE_NAMES.get(status.state, "Unknown")
        if state != "Ready":
            raise SourceUnavailableError(f"source {endpoint} is {state}, not Ready")
        if expected_pod and status.pod_uid != expected_pod:
            raise SourceUnavailableError(
                f"source {endpoint} now answers for pod UID {status.pod_uid or '(none)'}, not the recorded "
                f"{expected_pod}: the pod was replaced"
            )
        manifest = client.manifest(asked=manifest_asked)
        differences = identity.differences(manifest.identity)
        if differences:
            raise ValueError(f"source {endpoint} has another identity: {'; '.join(differences)}")
        meta = client.agent_metadata(metadata_asked)
        return SourceLink(endpoint, client, manifest, engine.add_remote(meta.metadata))
    except BaseException:
        client.close()
        raise


@dataclass
class PreparedSources:
    """Links made ahead of a pull, and the failures met making them; consumed by one `pull`."""

    engine: NixlEngine
    deaths: Deaths
    links: dict[str, SourceLink] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)

    def take(self, endpoint: str) -> SourceLink | None:
        """The link to `endpoint` (None if it was not prepared); raises the error met preparing it."""
        failure = self.failures.pop(endpoint, None)
        if failure is not None:
            raise failure
        return self.links.pop(endpoint, None)

    def drop(self, endpoint: str) -> None:
        """Drop one link before the pull (a source the caller would rather not read)."""
        link = self.links.pop(endpoint, None)
        if link is not None:
            self.engine.remove_remote(link.remote_agent)
            link.client.close()

    def close(self) -> None:
        """Drop the links no pull took."""
        for endpoint in list(self.links):
            self.drop(endpoint)


def prepare_sources(
    endpoints: Sequence[str],
    identity: WorkerIdentity,
    engine: NixlEngine,
    timeout: float,
    expected_pods: dict[str, str] | None = None,
) -> PreparedSources:
    """Link every source (what a pull can do before the target's tensors exist)."""
    prepared = PreparedSources(engine, Deaths())
    for endpoint in endpoints:
        try:
            prepared.links[endpoint] = link_source(
                endpoint, identity, engine, prepared.deaths, timeout, (expected_pods or {}).get(endpoint)
            )
        except LINK_ERRORS as exc:  # reported by the pull that takes it, like a failure met there
            prepared.failures[endpoint] = exc
    return prepared
