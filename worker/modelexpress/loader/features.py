"""Feature gates: model layouts whose weights cannot be exchanged peer to peer as loaded.

Multi-head latent attention (MLA: DeepSeek-V2/V3, Kimi-K2 and others) derives extra tensors from the
loaded weights after loading, outside the module's parameters and buffers; a target that skipped
that step would run without them. Such models load from disk unless `MX_SKIP_FEATURE_CHECK=1`
(for testing the transfer itself).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

MLA_ARCHITECTURES = ("DeepseekV2", "DeepseekV3", "DeepseekV32", "KimiK2", "MiniCPM3")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def feature_gate(config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Why peer-to-peer transfer is off for a model with this (Hugging Face) config; None when allowed."""
    env = os.environ if environ is None else environ
    if config is None or _truthy(env.get("MX_SKIP_FEATURE_CHECK")):
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else None
    for cfg in (config, text or {}):
        architectures = [str(a) for a in cfg.get("architectures") or []]
        if cfg.get("kv_lora_rank") or cfg.get("use_mla") or any(a.startswith(MLA_ARCHITECTURES) for a in architectures):
            what = ", ".join(architectures) or "this model"
            return (
                f"{what} uses multi-head latent attention, whose derived weights are not exchanged peer to peer; "
                "loading from disk (MX_SKIP_FEATURE_CHECK=1 overrides, for testing only)"
            )
    return None
