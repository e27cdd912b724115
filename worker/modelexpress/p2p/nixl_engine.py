"""The NIXL side of a worker: one agent, memory registered per region, one-sided READs from peers.

UCX settings pass through from the environment, with one default of ours: cuda_ipc GET zero-copy is
turned on unless the user chose otherwise, because UCX turns it off when it sees no NVLink and then
emulates GPU reads over TCP at ~0.5 GB/s, 3000x slower (`shared/GPU.md`).

NIXL's own progress thread is off by default: it busy-polls one core per agent for as long as the
agent lives (a source serves for hours), and on a small host it took the CPU the copy and the
checksums needed. The initiator progresses its READs when it polls them; a source progresses its
agent from `SourceWorker`'s responder thread, which is what connection set-up needs from the
passive side (`MX_NIXL_PROGRESS_THREAD=1` turns NIXL's thread back on).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from modelexpress.p2p.memory import Region, TensorLayout

log = logging.getLogger(__name__)

UCX_DEFAULTS = {
    "UCX_CUDA_IPC_ENABLE_GET_ZCOPY": "y",
    # Without CUDA, UCX would warn that the variable above is unused on every agent creation.
    "UCX_WARN_UNUSED_ENV_VARS": "n",
}


class TransferError(RuntimeError):
    """A NIXL operation failed; the receiving process carries on (the caller retries or falls back)."""


def configure_ucx_environment(
    environ: MutableMapping[str, str] | None = None, show_transports: bool = False
) -> dict[str, str]:
    """Apply our UCX defaults where the user set nothing; returns the UCX_* settings in effect.

    With `show_transports`, UCX prints the protocol and transport it picks for each kind of
    operation (`UCX_PROTO_INFO`), e.g. `zero-copy cma/memory` for host READs or `cuda_ipc` for GPUs.
    """
    env = os.environ if environ is None else environ
    for key, value in UCX_DEFAULTS.items():
        env.setdefault(key, value)
    if show_transports:
        env.setdefault("UCX_PROTO_INFO", "y")
    return {k: v for k, v in env.items() if k.startswith("UCX_")}


@dataclass
class ReadHandle:
    """One READ in flight: the NIXL handle and what it covers."""

    handle: Any
    remote_agent: str
    nbytes: int


def route_nixl_logs(environ: MutableMapping[str, str] | None = None) -> None:
    """NIXL prints its own INFO lines ("Backend UCX was instantiated") to standard output in another
    format, which breaks `--format json` and clutters every command: hand its logger to ours instead,
    warnings and up unless `NIXL_LOG_LEVEL` asks for more."""
    env = os.environ if environ is None else environ
    nixl_logger = logging.getLogger("nixl")
    for handler in list(nixl_logger.handlers):
        nixl_logger.removeHandler(handler)
    nixl_logger.propagate = True
    if not env.get("NIXL_LOG_LEVEL"):
        nixl_logger.setLevel(logging.WARNING)


class NixlEngine:
    """One NIXL agent per worker. Thread-confined: call it from one thread at a time."""

    def __init__(self, name: str | None = None, backend: str = "UCX", progress_thread: bool = False) -> None:
        from nixl._api import nixl_agent, nixl_agent_config

        route_nixl_logs()
        ucx = configure_ucx_environment()
        self.name = name or f"mx-{uuid.uuid4().hex[:12]}"
        self.backend = backend
        # UCX reads UCX_PROTO_INFO when the agent starts; set only for that moment, so that debugging
        # one agent never leaks into the process's later agents and children (and their stdout).
        show = log.isEnabledFor(logging.DEBUG) and "UCX_PROTO_INFO" not in os.environ
        if show:
            os.environ["UCX_PROTO_INFO"] = "y"
            ucx["UCX_PROTO_INFO"] = "y"
        try:
            config = nixl_agent_config(enable_prog_thread=progress_thread, backends=[backend])
            self._agent = nixl_agent(self.name, config)
        finally:
            if show:
                os.environ.pop("UCX_PROTO_INFO", None)
        self._registrations: list[Any] = []
        self._remotes: dict[bytes, str] = {}
        self.regions: list[Region] = []
        log.info(
            "NIXL agent %s ready with backend %s (progress thread %s); UCX settings: %s",
            self.name,
            backend,
            "on" if progress_thread else "off",
            ", ".join(f"{k}={v}" for k, v in sorted(ucx.items())) or "defaults",
        )
        try:
            log.debug("%s backend parameters: %s", backend, self._agent.get_plugin_params(backend))
        except Exception as exc:  # informational only
            log.debug("%s backend parameters unavailable: %s", backend, exc)

    def register(self, layout: TensorLayout) -> None:
        """Register every region of the layout (one registration per allocation, never per tensor)."""
        for region in layout.regions:
            descs = self._agent.get_reg_descs([(region.address, region.length, region.device_id, "")], region.kind)
            self._registrations.append(self._agent.register_memory(descs))
            self.regions.append(region)
        log.debug("registered %d region(s), %d bytes", len(layout.regions), sum(r.length for r in layout.regions))

    def deregister_all(self) -> None:
        for registration in self._registrations:
            try:
                self._agent.deregister_memory(registration)
            except Exception as exc:  # deregistration failing must not mask the caller's own error
                log.warning("deregistering memory failed: %s", exc)
        self._registrations.clear()
        self.regions.clear()

    def metadata(self) -> bytes:
        """Agent metadata a peer loads with `add_remote`."""
        data: bytes = self._agent.get_agent_metadata()
        return data

    def add_remote(self, metadata: bytes) -> str:
        """Load a peer's agent; a peer already loaded with the same metadata keeps its connection."""
        known = self._remotes.get(metadata)
        if known is not None:
            return known
        try:
            loaded = self._agent.add_remote_agent(metadata)
        except Exception as exc:
            raise TransferError(f"cannot load the peer's NIXL agent metadata: {exc}") from exc
        name: str = loaded if isinstance(loaded, str) else loaded.decode()
        self._remotes[metadata] = name
        return name

    def remove_remote(self, name: str) -> None:
        """Forget a peer (it failed or went away); the next add_remote connects afresh."""
        for metadata, known in list(self._remotes.items()):
            if known == name:
                del self._remotes[metadata]
        try:
            self._agent.remove_remote_agent(name)
        except Exception as exc:
            log.debug("removing remote agent %s: %s", name, exc)

    def start_read(
        self,
        remote_agent: str,
        pairs: list[tuple[int, int, int]],
        local_kind: str,
        local_device: int,
        remote_kind: str,
        remote_device: int,
    ) -> ReadHandle:
        """Post a READ of `(local_address, remote_address, length)` runs from `remote_agent`."""
        local = self._agent.get_xfer_descs([(la, n, local_device) for la, _, n in pairs], local_kind)
        remote = self._agent.get_xfer_descs([(ra, n, remote_device) for _, ra, n in pairs], remote_kind)
        try:
            handle = self._agent.initialize_xfer("READ", local, remote, remote_agent)
            state = self._agent.transfer(handle)
        except Exception as exc:
            raise TransferError(f"posting a READ from {remote_agent} failed: {exc}") from exc
        if state == "ERR":
            self.release(ReadHandle(handle, remote_agent, 0))
            raise TransferError(f"READ from {remote_agent} failed when posted")
        return ReadHandle(handle, remote_agent, sum(n for _, _, n in pairs))

    def state(self, read: ReadHandle) -> str:
        """DONE, PROC or ERR; an exception from NIXL counts as ERR."""
        try:
            state: str = self._agent.check_xfer_state(read.handle)
        except Exception as exc:
            log.warning("checking a READ from %s failed: %s", read.remote_agent, exc)
            return "ERR"
        return state

    def release(self, read: ReadHandle) -> bool:
        """Free a handle (cancelling it if still active); False when NIXL could not cancel it."""
        try:
            self._agent.release_xfer_handle(read.handle)
            return True
        except Exception as exc:
            log.warning("releasing a READ from %s failed (left to NIXL): %s", read.remote_agent, exc)
            return False

    def notify(self, remote_agent: str, message: bytes) -> bool:
        """Send a peer a standalone notification; False (logged) when it could not be sent."""
        try:
            self._agent.send_notif(remote_agent, message)
            return True
        except Exception as exc:  # informational: a lost notice must never fail the sender's work
            log.debug("notifying %s failed: %s", remote_agent, exc)
            return False

    def notifications(self) -> dict[str, list[bytes]]:
        """Notifications received since the last call, by sender; also progresses the agent."""
        try:
            notes: dict[str, list[bytes]] = self._agent.get_new_notifs()
        except Exception as exc:
            log.debug("reading notifications: %s", exc)
            return {}
        return notes
