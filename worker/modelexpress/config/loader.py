"""Layered loading of `ModelExpressConfig`: CLI flags > `MODEL_EXPRESS_*` env > YAML file > defaults.

pydantic-settings merges the sources (deep, so a YAML file may set one nested key); this module
supplies the two sources the seeds need that pydantic-settings does not spell their way:
- environment names derived from the model tree, one per option (`MODEL_EXPRESS_CACHE_EVICTION_ENABLED`),
  plus the seeds' short spelling for logging (`MODEL_EXPRESS_LOG_LEVEL` beside `MODEL_EXPRESS_LOGGING_LEVEL`);
- a YAML file chosen at load time (`--config`).
Errors name the option's dotted path and the offending value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from modelexpress.config.settings import ModelExpressConfig
from modelexpress.errors import UserError

ENV_PREFIX = "MODEL_EXPRESS_"
# The seeds spell the logging section both ways: LOG_LEVEL (deployment guide), LOGGING_LEVEL (README).
_SECTION_ENV_ALIASES = {"logging": ("LOGGING", "LOG")}
_NULL_WORDS = {"null", "none", "~"}


class ConfigError(UserError):
    """A configuration that cannot be used; the message names every bad option and value."""


@dataclass(frozen=True)
class _LoadRequest:
    config_file: Path | None
    environ: Mapping[str, str]


_REQUEST: ContextVar[_LoadRequest] = ContextVar("modelexpress_config_request")


@dataclass(frozen=True)
class EnvOption:
    """One configuration leaf and every environment name that sets it."""

    path: tuple[str, ...]
    env_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _leaf_names(name: str, info: FieldInfo) -> list[str]:
    names = [name]
    if isinstance(info.validation_alias, AliasChoices):
        names += [c for c in info.validation_alias.choices if isinstance(c, str) and c != name]
    return names


def iter_options(model: type[BaseModel] = ModelExpressConfig, prefix: tuple[str, ...] = ()) -> Iterator[EnvOption]:
    """Every leaf option of the model tree with its environment names, in declaration order."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_options(annotation, (*prefix, name))
            continue
        path = (*prefix, name)
        sections = _SECTION_ENV_ALIASES.get(path[0], (path[0].upper(),))
        env_names = [
            ENV_PREFIX + "_".join((section, *(p.upper() for p in path[1:-1]), leaf.upper()))
            for leaf in _leaf_names(name, info)
            for section in sections
        ]
        yield EnvOption(path=path, env_names=tuple(env_names))


def _set_nested(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


class ModelExpressEnvSource(PydanticBaseSettingsSource):
    """`MODEL_EXPRESS_*` variables, mapped onto the model tree; two spellings that disagree are an error."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is resolved in __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for option in iter_options(self.settings_cls):
            found = {name: self._environ[name] for name in option.env_names if name in self._environ}
            if not found:
                continue
            if len(set(found.values())) > 1:
                listed = ", ".join(f"{k}={v!r}" for k, v in found.items())
                raise ConfigError(f"{option.dotted}: environment variables disagree ({listed}); unset all but one")
            raw = next(iter(found.values()))
            _set_nested(values, option.path, None if raw.strip().lower() in _NULL_WORDS else raw)
        return values


class YamlFileSource(PydanticBaseSettingsSource):
    """The YAML configuration file given with `--config` (absent: contributes nothing)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"configuration file {self._path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"configuration file {self._path} cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"configuration file {self._path} is not UTF-8 text (byte {exc.start}): give a YAML file"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # one line: where, and what the parser expected
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"configuration file {self._path} is not valid YAML{where}: {what}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"configuration file {self._path} must hold a mapping of sections (server, database, cache, "
                f"logging), found a {type(data).__name__}"
            )
        return data


def layered_sources(
    settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource
) -> tuple[PydanticBaseSettingsSource, ...]:
    request = _REQUEST.get(_LoadRequest(config_file=None, environ=os.environ))
    return (
        init_settings,  # CLI flags, passed as keyword arguments
        ModelExpressEnvSource(settings_cls, request.environ),
        YamlFileSource(settings_cls, request.config_file),
    )


def describe_validation_error(exc: ValidationError, origin: str = "") -> str:
    """One line per problem: `server.port = 70000: Input should be less than or equal to 65535`."""
    lines = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"]) or "(root)"
        if error["type"] == "extra_forbidden":
            lines.append(f"{dotted}: unknown option (check the spelling; `modelexpress config generate` lists all)")
            continue
        value = error.get("input")
        shown = f" = {value!r}" if not isinstance(value, dict) else ""
        lines.append(f"{dotted}{shown}: {error['msg']}")
    header = f"invalid configuration{f' in {origin}' if origin else ''}:"
    return "\n".join([header, *("  " + line for line in lines)])


def load_config(
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ModelExpressConfig:
    """Build the effective configuration; raise `ConfigError` naming each bad option.

    `overrides` are the CLI flags as a nested mapping (`{"server": {"port": 8080}}`); `environ`
    defaults to the process environment.
    """
    path = Path(config_file) if config_file is not None else None
    token = _REQUEST.set(_LoadRequest(config_file=path, environ=os.environ if environ is None else environ))
    try:
        return ModelExpressConfig(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path) if path else "")) from None
    finally:
        _REQUEST.reset(token)
