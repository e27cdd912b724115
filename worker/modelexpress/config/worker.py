"""Settings of a worker process (`MX_*` environment variables of the seeds, plus transfer tuning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelexpress import PEER_TOKEN_FILE, WORKER_TLS_SERVER_NAME
from modelexpress.config.environment import describe_environment_error
from modelexpress.errors import UserError


def _default_registry_path() -> str:
    return str(Path.home() / ".cache" / "modelexpress" / "sources.db")


class WorkerSettings(BaseSettings):
    """Worker-side options, read from `MX_*` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="MX_", extra="ignore", use_attribute_docstrings=True, protected_namespaces=("settings_",)
    )

    worker_grpc_port: int = Field(default=0, ge=0, le=65535)
    """Port of the worker's gRPC WorkerService (0 picks a free port); in a pod with several ranks, rank
    k on the node serves on this port + k (the pod's `modelexpress.io/ranks-per-pod` ports)."""
    worker_host: str | None = None
    """Address peers use to reach this worker (default: this host's address)."""
    metadata_backend: Literal["embedded", "kubernetes", "redis"] = "embedded"
    """Where sources are recorded: a local SQLite file, ModelMetadata resources, or Redis."""
    redis_url: str = Field(default="redis://localhost:6379", validation_alias=AliasChoices("MX_REDIS_URL", "REDIS_URL"))
    """Redis of the `redis` backend (`REDIS_URL`; `redis://:password@host:6379/0`, `rediss://` for TLS)."""
    registry_path: str = Field(default_factory=_default_registry_path)
    """SQLite file of the embedded source registry."""
    status_ttl_secs: int = Field(default=3600, ge=1)
    """A source not heard from for this long is stale and never handed out (Redis records expire
    then); sources refresh their record every third of it."""
    transfer_timeout_secs: float = Field(default=60.0, gt=0)
    """Deadline of one chunk READ; a source that misses it is abandoned for this pull."""
    connect_timeout_secs: float = Field(default=10.0, gt=0)
    """Deadline of each gRPC call to a source."""
    max_inflight: int = Field(default=4, ge=1, le=256)
    """READs in flight per source."""
    chunk_bytes: int | None = Field(default=None, ge=1 << 16)
    """Bytes per READ chunk, the unit of striping and retry (unset: 64 MiB into host memory, 512 MiB
    into GPU memory; the last chunks of a pull taper down to 1 MiB, into GPU memory to 128 MiB)."""
    checksum_algorithm: Literal["auto", "xxh3-64", "row-sum-64"] = "auto"
    """Checksum a source announces for its tensors: `auto` takes `row-sum-64` (one reduction on the GPU
    itself) when it serves GPU memory and `xxh3-64` for host memory."""
    verification: Literal["full", "sampled", "off"] = "full"
    """How much of a pull is checked against the sources' checksums: `full` (every tensor), `sampled`
    (a random set of tensors holding `MX_VERIFY_SAMPLE` of the bytes, new for every pull; one failure
    makes the pull check every tensor, so a source that corrupts many tensors is caught), or `off`
    (nothing checked: the bytes are trusted as they arrive)."""
    verify_sample: float = Field(default=0.1, gt=0, le=1)
    """Fraction of a pull's bytes that `MX_VERIFICATION=sampled` checks."""
    max_pullers: int = Field(default=0, ge=0)
    """Targets a source serves at once (0: no limit). Further targets are told the source is busy and
    try another; a burst of replicas then fans out as a tree, each finished target serving the next."""
    busy_wait_secs: float = Field(default=300.0, ge=0)
    """How long a target whose every source is busy (`MX_MAX_PULLERS`) waits for one to free up or for a
    new source to appear, asking the registry again, before it loads from disk."""
    worker_tls_cert_file: str | None = None
    """Serve the WorkerService over TLS with this certificate (PEM; with `MX_WORKER_TLS_KEY_FILE`); it
    must name `MX_WORKER_TLS_SERVER_NAME` (`modelexpress-worker`). Unset: plaintext, said in the log."""
    worker_tls_key_file: str | None = None
    """Private key of `MX_WORKER_TLS_CERT_FILE` (PEM)."""
    worker_tls_ca_file: str | None = None
    """Dial other workers' WorkerServices over TLS, trusting this CA (PEM)."""
    worker_tls_server_name: str = WORKER_TLS_SERVER_NAME
    """Name a worker's certificate is checked for (workers are dialled by IP)."""
    peer_auth: Literal["off", "kubernetes"] = "off"
    """`kubernetes`: this source admits only callers presenting a pod-bound ServiceAccount token of an
    allowed, opted-in pod (TokenReview; see docs/p2p.md, access control). `off`: anyone who can reach
    its port (the embedded default)."""
    peer_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """With `MX_PEER_AUTH=kubernetes`: namespaces besides this pod's own whose opted-in pods may read
    (`*`: every namespace; JSON list or comma-separated)."""
    peer_selector: str | None = None
    """With `MX_PEER_AUTH=kubernetes`: labels a caller's pod must carry too (`team=a,tier=serving`)."""
    peer_trusted_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """User names admitted without a pod: the operator's ServiceAccount, which follows every worker."""
    peer_audience: str = "modelexpress"
    """Audience a peer's token must be issued for (the projected token the webhook mounts)."""
    peer_token_file: str = PEER_TOKEN_FILE
    """This worker's own peer token, sent on every call to a source (read on each call: it rotates)."""
    artifact_transfer: bool = True
    """Receive a peer's compiled artifacts (vLLM's compile cache) with its weights, and serve this
    worker's once its engine finished compiling; `MX_ARTIFACT_TRANSFER=0` turns both off."""
    artifact_max_bytes: int = Field(default=32 << 30, ge=0)
    """Largest artifact set a target accepts (bytes, all files together); a larger one is refused."""
    artifact_max_files: int = Field(default=100_000, ge=0)
    """Most files an artifact set may have; a set with more is refused."""
    nixl_progress_thread: bool = False
    """Run NIXL's own progress thread in each agent. It busy-polls a core for the agent's lifetime;
    off, targets progress their READs as they poll them and sources progress from a responder thread
    (every 1 ms while a peer is connecting or pulling, every 100 ms when idle)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on this port (unset: no metrics endpoint)."""
    pod_name: str | None = None
    """Name of this worker's pod (downward API `metadata.name`); reported on the status stream."""
    pod_uid: str | None = None
    """UID of this worker's pod (downward API `metadata.uid`): the operator only records a worker
    whose reported UID matches the pod it dialled, so a reused pod IP is never mistaken for it."""
    pod_namespace: str | None = None
    """Namespace of this worker's pod (downward API `metadata.namespace`); where the Kubernetes
    registry reads ModelMetadata (default: the in-cluster ServiceAccount's namespace)."""
    node_name: str | None = None
    """Node of this worker's pod (downward API `spec.nodeName`); same-node sources are preferred."""
    zone: str | None = None
    """Zone of this worker's node (`topology.kubernetes.io/zone`; the webhook sets it from the pod's copy
    of that label where the cluster provides one). Sources in the target's zone are preferred."""
    domain: str | None = None
    """Rack or NVLink domain of this worker's node; sources in the target's domain are preferred over
    the rest of its zone. In the cluster both are read from the operator's record when unset."""
    max_sources: int = Field(default=4, ge=0)
    """Sources a pull stripes over at once (0: every Ready one), nearest first; the others are kept in
    reserve for when one fails."""
    instance: str | None = None
    """Engine instance this rank belongs to (all ranks of one instance share it; default: the pod name)."""
    model_name: str | None = None
    """Name the model is published under, instead of the one found from its files (a hub snapshot's repo,
    a directory's content digest); replicas with the same name and revision exchange weights."""
    model_revision: str | None = None
    """Revision published with `MX_MODEL_NAME` (default: the engine's revision, else `main`)."""

    def for_local_rank(self, local_rank: int) -> WorkerSettings:
        """These settings for the rank that is `local_rank` on its node: its WorkerService on
        `MX_WORKER_GRPC_PORT` + `local_rank`, as the operator dials a pod's ranks (a free port stays free)."""
        if local_rank == 0 or self.worker_grpc_port == 0:
            return self
        port = self.worker_grpc_port + local_rank
        if port > 65535:
            raise WorkerSettingsError(
                f"MX_WORKER_GRPC_PORT={self.worker_grpc_port}: local rank {local_rank} would listen on {port}, "
                "past 65535; choose a port at most 65535 minus the ranks per pod"
            )
        return self.model_copy(update={"worker_grpc_port": port})

    @field_validator("peer_namespaces", "peer_trusted_users", mode="before")
    @classmethod
    def _listed(cls, value: object) -> object:
        """A JSON list or comma-separated names (how they read in a pod spec)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


class WorkerSettingsError(UserError, ValueError):
    """Bad `MX_*` values; the message names each variable, its value and what is accepted."""


def load_worker_settings(**overrides: object) -> WorkerSettings:
    """`WorkerSettings` from the environment (and `overrides`), or `WorkerSettingsError` naming each bad variable."""
    try:
        return WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise WorkerSettingsError(describe_environment_error(exc, WorkerSettings, "MX_")) from None
