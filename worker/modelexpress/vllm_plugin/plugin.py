"""Registration of the `mx` load formats with vLLM; every vLLM import happens here, lazily."""

from __future__ import annotations

import logging
import os
from typing import Any

from modelexpress.config.logs import configure_vllm_logging

log = logging.getLogger("modelexpress.vllm")
LOAD_FORMATS = ("mx", "mx-source", "mx-target")


def refusing_loader(reason: str) -> type[Any]:
    """A loader class that fails at once with `reason`: an unsupported vLLM never half-works."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    class UnsupportedVllm(BaseModelLoader):  # type: ignore[misc]
        def __init__(self, load_config: Any) -> None:
            raise RuntimeError(f"{reason}; install a supported vLLM, or choose another --load-format")

        def download_model(self, model_config: Any) -> None:  # pragma: no cover - never constructed
            raise NotImplementedError

        def load_weights(self, model: Any, model_config: Any) -> None:  # pragma: no cover - never constructed
            raise NotImplementedError

    return UnsupportedVllm


def register() -> None:
    """Entry point of `vllm.general_plugins`; a no-op with MX_REGISTER_LOADERS=0 or without vLLM."""
    configure_vllm_logging()
    if os.environ.get("MX_REGISTER_LOADERS", "1").strip().lower() in ("0", "false", "no", "off"):
        log.info("MX_REGISTER_LOADERS=0: the mx load formats are not registered")
        return
    try:
        import vllm
        from vllm.model_executor.model_loader import register_model_loader
    except ImportError as exc:
        log.warning("vLLM is not importable (%s); the mx load formats are not registered", exc)
        return
    from modelexpress.vllm_plugin.versions import unsupported

    reason = unsupported(vllm.__version__)
    if reason is not None:
        log.error("%s: --load-format %s will fail with this message", reason, "/".join(LOAD_FORMATS))
        for load_format in LOAD_FORMATS:
            register_model_loader(load_format)(refusing_loader(reason))
        return
    from modelexpress.metrics import RELAY
    from modelexpress.metrics_relay import set_up_relay
    from modelexpress.vllm_plugin.loader import LOADERS

    set_up_relay(RELAY)  # the engine's /metrics reports what its worker processes pulled and served
    for load_format, loader in LOADERS.items():
        register_model_loader(load_format)(loader)
