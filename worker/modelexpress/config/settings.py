"""The configuration model of ModelExpress: every option of the seeds' server configuration.

One pydantic model is the single source of truth: field docstrings become the comments of
`modelexpress config generate` and the configuration reference. Values are layered by
`modelexpress.config.loader` (CLI > `MODEL_EXPRESS_*` env > YAML file > these defaults).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from modelexpress.durations import Duration

LogLevelName = Literal["trace", "debug", "info", "warn", "error"]
LogFormatName = Literal["json", "pretty", "compact"]


def _normalise_level(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return {"warning": "warn", "critical": "error", "fatal": "error"}.get(lowered, lowered)
    return value


LogLevel = Annotated[LogLevelName, BeforeValidator(_normalise_level)]


class Section(BaseModel):
    """A configuration section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)


class ServerSettings(Section):
    host: str = "0.0.0.0"
    """Address the gRPC server binds to."""
    port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port (0 picks a free port)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the server's Prometheus /metrics (unset: not served; 0 picks a free port)."""
    graceful_shutdown: bool = True
    """Finish in-flight requests before stopping on SIGTERM."""
    shutdown_timeout_seconds: int = Field(default=30, ge=0)
    """Seconds to wait for in-flight requests during a graceful shutdown."""


class DatabaseSettings(Section):
    path: str = "./models.db"
    """SQLite file tracking cached models (put it on a shared volume when several nodes use it)."""
    wal_mode: bool = True
    """Open the database in write-ahead-log mode so readers never block the writer."""
    pool_size: int = Field(default=10, ge=1)
    """Number of pooled database connections."""
    connection_timeout_seconds: int = Field(default=30, ge=1)
    """Seconds to wait for a database lock before failing."""


class EvictionPolicySettings(Section):
    type: Literal["lru"] = "lru"
    """Eviction policy; least-recently-used is the only one."""
    unused_threshold: Duration = Field(
        default=timedelta(days=7),
        validation_alias=AliasChoices("unused_threshold", "unused_threshold_seconds"),
    )
    """Evict models unused for this long (e.g. 7d, 12h, or seconds)."""
    max_models: int | None = Field(default=None, ge=1)
    """Keep at most this many models (null: unlimited)."""
    min_free_space_bytes: int | None = Field(default=None, ge=0)
    """Evict until at least this much disk space is free (null: no minimum)."""


class EvictionSettings(Section):
    enabled: bool = True
    """Run the eviction policy."""
    policy: EvictionPolicySettings = Field(default_factory=EvictionPolicySettings)
    """What to evict."""
    check_interval: Duration = Field(
        default=timedelta(hours=1),
        validation_alias=AliasChoices("check_interval", "check_interval_seconds"),
    )
    """How often eviction runs (e.g. 1h, 30m, or seconds)."""


class CacheSettings(Section):
    directory: str | None = None
    """Model cache directory (unset: `HF_HUB_CACHE`, else `~/.cache/huggingface/hub`; NGC models `~/.cache/ngc`)."""
    max_size_bytes: int | None = Field(default=None, ge=1)
    """Largest total size of the cache in bytes (null: unlimited)."""
    eviction: EvictionSettings = Field(default_factory=EvictionSettings)
    """Cache eviction."""


class LoggingSettings(Section):
    level: LogLevel = "info"
    """Log level: trace, debug, info, warn or error."""
    format: LogFormatName = "pretty"
    """Log format: json, pretty or compact."""
    file: str | None = None
    """Write logs to this file instead of standard error (null: standard error)."""
    structured: bool = False
    """Attach key/value context to every line (always on for json)."""


class ModelExpressConfig(BaseSettings):
    """Every ModelExpress option, grouped as in the generated YAML file."""

    model_config = SettingsConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)

    server: ServerSettings = Field(default_factory=ServerSettings)
    """gRPC server."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    """Model database."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """Model cache and eviction."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    """Logging."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Imported here because the loader walks this module's model tree.
        from modelexpress.config.loader import layered_sources

        return layered_sources(settings_cls, init_settings)
