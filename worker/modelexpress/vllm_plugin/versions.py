"""The vLLM releases the adapter follows (pure; no vLLM import).

The adapter relies on `register_model_loader`, `BaseModelLoader.load_model` calling `create_model`,
`load_weights` and then post-processing (0.32 and 0.33 do), `DefaultModelLoader` and vLLM's
built-in `modelexpress` load format, which imports `modelexpress.engines.vllm.loader`.
"""

from __future__ import annotations

import re

SUPPORTED = ((0, 32), (0, 33))
SUPPORTED_TEXT = "0.32 and 0.33"


def unsupported(version: str) -> str | None:
    """Why this vLLM version is not supported (None when it is)."""
    found = re.match(r"^(\d+)\.(\d+)", version.strip())
    if found is None:
        return f"vLLM reports version {version!r}, not a release number; the ModelExpress load formats support vLLM {SUPPORTED_TEXT}"
    if (int(found[1]), int(found[2])) not in SUPPORTED:
        return f"vLLM {version} is installed; the ModelExpress load formats support vLLM {SUPPORTED_TEXT}"
    return None
