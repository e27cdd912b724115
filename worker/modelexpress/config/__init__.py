"""Configuration of ModelExpress: the settings model, layered loading, YAML generation, logging.

The names below load on first use: a command that needs only its client settings
(`modelexpress.config.client`) must not pay for building the whole settings model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "render_config_yaml": "modelexpress.config.generate",
    "ConfigError": "modelexpress.config.loader",
    "iter_options": "modelexpress.config.loader",
    "load_config": "modelexpress.config.loader",
    "CacheSettings": "modelexpress.config.settings",
    "DatabaseSettings": "modelexpress.config.settings",
    "EvictionPolicySettings": "modelexpress.config.settings",
    "EvictionSettings": "modelexpress.config.settings",
    "LoggingSettings": "modelexpress.config.settings",
    "ModelExpressConfig": "modelexpress.config.settings",
    "ServerSettings": "modelexpress.config.settings",
    "Duration": "modelexpress.durations",
    "format_duration": "modelexpress.durations",
    "parse_duration": "modelexpress.durations",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'modelexpress.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
