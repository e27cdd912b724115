"""Settings of the model CLI client: flags over `MODEL_EXPRESS_*` environment variables over defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# 1 MiB, not the seeds' 32 KiB: bench/server_streaming.py measured receiving 1.95x faster at 1 MiB
# (0.41 vs 0.21 GB/s, 2 GiB on loopback); a chunk is held once in memory on each side, so the cost is nil.
DEFAULT_TRANSFER_CHUNK = 1 << 20
MAX_TRANSFER_CHUNK = 8 << 20


class ClientSettings(BaseSettings):
    """What `modelexpress health|api|model ...` use to reach the server and receive files."""

    model_config = SettingsConfigDict(env_prefix="MODEL_EXPRESS_", extra="ignore", use_attribute_docstrings=True)

    endpoint: str = Field(
        default="localhost:8001",
        validation_alias=AliasChoices("MODEL_EXPRESS_URL", "MODEL_EXPRESS_ENDPOINT", "endpoint"),
    )
    """Server address (`host:port`; an `http://` or `grpc://` prefix is accepted and dropped)."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for the server to answer (connecting, and each unary call)."""
    cache_directory: str | None = None
    """This machine's cache (`--cache-path`): where direct and no-shared-storage downloads land."""
    max_retries: int | None = Field(default=None, ge=0)
    """Attempts after the first when a file stream breaks (unset: 2)."""
    no_shared_storage: bool = False
    """Receive the model's files over gRPC into this machine's cache instead of reading the server's."""
    transfer_chunk_size: int = Field(default=DEFAULT_TRANSFER_CHUNK, ge=1, le=MAX_TRANSFER_CHUNK)
    """Bytes per streamed chunk (the server caps it at 8 MiB); `32768` gives the seeds' default."""

    token: SecretStr | None = None
    """A bearer token for servers that require one (prefer `token_file`: it can rotate)."""
    token_file: str | None = None
    """File holding the bearer token, read at each call (e.g. a projected ServiceAccount token)."""

    def bearer_token(self) -> str | None:
        if self.token_file:
            return Path(self.token_file).read_text().strip() or None
        return self.token.get_secret_value() if self.token else None

    @field_validator("endpoint")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        return value.removeprefix("http://").removeprefix("grpc://").rstrip("/")
