"""The replica's side: fetch a version, verified, beside the one it holds; then make it the one it holds.

A replica keeps one copy of its model's checkpoint tensors in host memory (the version it serves),
and offers that copy to the other replicas from a WorkerService of its own, so a trainer's link is
not every replica's bottleneck. `fetch` pulls only the tensors whose digests changed into new memory
and verifies them; nothing the replica holds or serves is touched until `commit`, so a fetch that
fails (no source in time, a source that dies, a tensor no source can repair, a layout that does not
fit) leaves the replica exactly as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from modelexpress.config.worker import WorkerSettings, load_worker_settings
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import TensorLayout, TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PreparedSources, PullError, PullOptions, PullResult, prepare_sources, pull
from modelexpress.p2p.source import SourceWorker
from modelexpress.refit.versions import (
    LayoutMismatchError,
    UpdateError,
    changed_tensors,
    layout_differences,
    layout_of,
    version_identity,
)
from modelexpress.registry.base import RegistryUnavailableError, SourceRegistry, placement

log = logging.getLogger(__name__)
_POLL = 0.25


@dataclass
class Staged:
    """A version fetched and verified, not yet installed: the tensors that changed, in memory of their own."""

    version: str
    manifest: Manifest
    changed: list[str]
    layout: TensorLayout | None
    result: PullResult | None
    seconds: float
    named: tuple[str, ...] = ()
    """The sources the update named (the trainer's, as the trainer's engine sends them)."""

    @property
    def moved_bytes(self) -> int:
        return self.result.bytes if self.result is not None else 0

    def by_origin(self) -> dict[str, int]:
        """Bytes pulled from the sources the update named (`trainer`) and from those the registry knew
        (`replica`: replicas that had the version already)."""
        served = self.result.served if self.result is not None else {}
        trainer = sum(n for endpoint, n in served.items() if endpoint in self.named)
        return {"trainer": trainer, "replica": sum(served.values()) - trainer}


class VersionReceiver:
    """Holds one version of a model's checkpoint tensors, serves it, and fetches the next."""

    def __init__(
        self,
        model_name: str,
        settings: WorkerSettings | None = None,
        registry: SourceRegistry | None = None,
        serve: bool = True,
    ) -> None:
        self.model_name = model_name
        self.settings = settings or load_worker_settings()
        self.registry = registry
        self.serve = serve
        self.version: str | None = None
        self.held: TensorLayout | None = None
        self.manifest: Manifest | None = None
        """The manifest the held version was verified against (its digests are the ones served)."""
        self.source: SourceWorker | None = None
        self._engine: NixlEngine | None = None

    # --- fetching -------------------------------------------------------------------------------------

    def fetch(self, version: str, hints: Sequence[str] = (), timeout: float = 300.0) -> Staged:
        """Pull what `version` changed, verified, into memory of its own; `UpdateError` if it cannot."""
        started = time.monotonic()
        deadline = started + timeout
        identity = version_identity(self.model_name, version)
        engine = self._pull_engine()
        prepared = self._link(identity, hints, engine, deadline, timeout)
        if any(endpoint not in hints for endpoint in prepared.links):
            # Replicas that hold the version already serve it: the named sources (the trainer) are left
            # to those that found none, so the trainer's link carries each version about once.
            for endpoint in [e for e in prepared.links if e in hints]:
                prepared.drop(endpoint)
        offered = next(iter(prepared.links.values())).manifest
        if self.manifest is not None:
            problems = layout_differences(layout_of(self.manifest), layout_of(offered))
            if problems:
                prepared.close()
                raise LayoutMismatchError(
                    f"version {version} of {self.model_name} does not fit the model: {'; '.join(problems)}"
                )
        changed = changed_tensors(self.manifest, offered)
        if not changed:
            prepared.close()
            return Staged(version, offered, [], None, None, time.monotonic() - started, tuple(hints))
        wanted = set(changed)
        layout = allocate_pool(
            [TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in offered.tensors if t.name in wanted]
        )
        engine.register(layout)
        options = PullOptions(
            connect_timeout=self.settings.connect_timeout_secs,
            busy_wait=max(0.0, deadline - time.monotonic()),
        )
        try:
            result = pull(layout, identity, list(prepared.links), engine, options, prepared=prepared,
                          discover=self._discover(identity, hints))  # fmt: skip
        except PullError as exc:
            raise UpdateError(f"version {version} of {self.model_name}: {exc}") from None
        finally:
            prepared.close()
            engine.deregister_all()
        return Staged(version, offered, changed, layout, result, time.monotonic() - started, tuple(hints))

    def _link(
        self, identity: WorkerIdentity, hints: Sequence[str], engine: NixlEngine, deadline: float, timeout: float
    ) -> PreparedSources:
        """Sources of exactly this version, linked; asks again until one answers or the time is up."""
        failures: dict[str, str] = {}
        while True:
            endpoints = self._discover(identity, hints)()
            prepared = prepare_sources(endpoints, identity, engine, self.settings.connect_timeout_secs)
            if prepared.links:
                return prepared
            failures.update({endpoint: str(exc) for endpoint, exc in prepared.failures.items()})
            prepared.close()
            if time.monotonic() >= deadline:
                seen = "; ".join(f"{e}: {why}" for e, why in list(failures.items())[:3]) or "none found"
                raise UpdateError(
                    f"no source offered version {identity.weights_version} of {self.model_name} within "
                    f"{timeout:.0f}s (sources tried: {seen})"
                )
            time.sleep(_POLL)

    def _discover(self, identity: WorkerIdentity, hints: Sequence[str]) -> Callable[[], list[str]]:
        def endpoints() -> list[str]:
            found = list(hints)
            if self.registry is not None:
                try:
                    records = self.registry.find_ready(identity, placement(self.settings))
                except RegistryUnavailableError as exc:
                    log.warning("no registry lookup for version %s (%s)", identity.weights_version, exc)
                    records = []
                own = self.source.endpoint if self.source is not None else None
                found += [r.endpoint for r in records if r.endpoint not in found and r.endpoint != own]
            return found

        return endpoints

    def _pull_engine(self) -> NixlEngine:
        # Its own agent: the serving agent is confined to the source's responder thread.
        if self._engine is None:
            self._engine = NixlEngine(progress_thread=self.settings.nixl_progress_thread)
        return self._engine

    # --- installing -----------------------------------------------------------------------------------

    def tensors(self, staged: Staged) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of the staged version: the changed ones from the fetch, the rest from the held copy."""
        fresh = staged.layout.tensors if staged.layout is not None else {}
        held = self.held.tensors if self.held is not None else {}
        for entry in staged.manifest.tensors:
            yield entry.name, fresh[entry.name] if entry.name in fresh else held[entry.name]

    def held_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The held version's tensors (what a failed install puts back)."""
        if self.held is not None and self.manifest is not None:
            for entry in self.manifest.tensors:
                yield entry.name, self.held.tensors[entry.name]

    def commit(self, staged: Staged) -> None:
        """Make the staged version the one held and served."""
        identity = version_identity(self.model_name, staged.version)
        if self.held is None:
            assert staged.layout is not None  # a first fetch moves every tensor
            self.held = staged.layout
        elif staged.layout is not None:
            if self.source is not None:
                self.source.hold(f"updating to version {staged.version}")
            for name, tensor in staged.layout.tensors.items():
                self.held.tensors[name].copy_(tensor)
        self.version, self.manifest = staged.version, staged.manifest
        staged.layout = None
        if not self.serve:
            return
        algorithm = staged.manifest.checksum_algorithm
        digests = staged.manifest.checksum_of
        try:
            if self.source is None:
                self.source = SourceWorker(identity, self.held, self.settings, checksums=digests, algorithm=algorithm)
                self.source.start(self.registry)
            else:
                self.source.republish(identity, digests, algorithm)
        except Exception as exc:  # the version is installed either way; only its offer to peers is lost
            log.warning("offering version %s to peers failed (%s); it is served to clients all the same",
                        staged.version, exc)  # fmt: skip

    def close(self) -> None:
        if self.source is not None:
            self.source.stop()
            self.source = None
        if self._engine is not None:
            self._engine.deregister_all()
