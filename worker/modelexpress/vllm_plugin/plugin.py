"""Registration of the `mx` load formats with vLLM; every vLLM import happens here, lazily."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("modelexpress.vllm")
LOAD_FORMATS = ("mx", "mx-source", "mx-target")


def register() -> None:
    """Entry point of `vllm.general_plugins`; a no-op with MX_REGISTER_LOADERS=0 or without vLLM."""
    if os.environ.get("MX_REGISTER_LOADERS", "1").strip().lower() in ("0", "false", "no", "off"):
        log.info("MX_REGISTER_LOADERS=0: the mx load formats are not registered")
        return
    try:
        from vllm.model_executor.model_loader import register_model_loader
    except ImportError as exc:
        log.warning("vLLM is not importable (%s); the mx load formats are not registered", exc)
        return
    from modelexpress.vllm_plugin.loader import loader_class

    for load_format in LOAD_FORMATS:
        register_model_loader(load_format)(loader_class(load_format))
