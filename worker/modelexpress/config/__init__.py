"""Configuration of ModelExpress: the settings model, layered loading, YAML generation, logging."""

from modelexpress.config.generate import render_config_yaml
from modelexpress.config.loader import ConfigError, iter_options, load_config
from modelexpress.config.settings import (
    CacheSettings,
    DatabaseSettings,
    EvictionPolicySettings,
    EvictionSettings,
    LoggingSettings,
    ModelExpressConfig,
    ServerSettings,
)
from modelexpress.durations import Duration, format_duration, parse_duration

__all__ = [
    "CacheSettings",
    "ConfigError",
    "DatabaseSettings",
    "Duration",
    "EvictionPolicySettings",
    "EvictionSettings",
    "LoggingSettings",
    "ModelExpressConfig",
    "ServerSettings",
    "format_duration",
    "iter_options",
    "load_config",
    "parse_duration",
    "render_config_yaml",
]
