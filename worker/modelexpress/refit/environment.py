"""What a trainer's or a replica's side of weight versions reads from its environment: the `MX_*` worker
settings and the source registry they name."""

from __future__ import annotations

import logging

from modelexpress.config.worker import WorkerSettings, WorkerSettingsError, load_worker_settings
from modelexpress.registry import RegistryUnavailableError, SourceRegistry, open_registry

log = logging.getLogger(__name__)


def settings_and_registry(without: str, **overrides: object) -> tuple[WorkerSettings, SourceRegistry | None]:
    """The worker settings (a bad variable raises ValueError naming it, as vLLM reports init errors) and
    their registry; None when it cannot be opened, with a warning that says `without`, what is lost."""
    try:
        settings = load_worker_settings(**overrides)
    except WorkerSettingsError as exc:
        raise ValueError(str(exc)) from None
    try:
        return settings, open_registry(settings)
    except RegistryUnavailableError as exc:
        log.warning("no registry (%s): %s", exc, without)
        return settings, None
