"""Settings of the server in the cluster (`MX_SERVER_*`): which namespace's ModelCaches it manages,
which cache PVC it mounts, and whether callers must present a ServiceAccount token."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ClusterServerSettings(BaseSettings):
    """`embedded` serves this machine's cache; `cluster` ensures models through ModelCache resources."""

    model_config = SettingsConfigDict(env_prefix="MX_SERVER_", extra="ignore", use_attribute_docstrings=True)

    mode: Literal["embedded", "cluster"] = "embedded"
    """Where models live: this machine's cache (`embedded`) or ModelCaches on PVCs (`cluster`)."""
    namespace: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    """Namespace of the ModelCaches the server creates and reads (default: the server pod's)."""
    cache_claim: str | None = Field(default=None, max_length=253)
    """A ReadWriteMany PVC the server mounts; ModelCaches it creates download into it, so their files
    can be streamed. Unset: each ModelCache gets its own PVC and files cannot be streamed by the server."""
    cache_mount: str | None = None
    """Where `cache_claim` is mounted in the server's pod (default: the cache directory)."""
    storage_size: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")
    """Size of the PVC of a ModelCache the server creates without `cache_claim` (unset: sized from the source)."""
    credentials_secret: str | None = Field(default=None, max_length=253)
    """Secret named as `credentialsSecretRef` of the ModelCaches the server creates (HF_TOKEN, ...)."""
    require_token: bool = False
    """Callers of ensure and delete must send `authorization: Bearer <ServiceAccount token>`, checked
    with a TokenReview."""
    token_audiences: list[str] = Field(default_factory=list)
    """Audiences a presented token must carry (empty: the API server's default)."""
