"""`MxModelLoader` for vLLM's built-in `--load-format modelexpress` (vLLM 0.23 and later import it from here).

vLLM wraps it in its own `ModelExpressModelLoader`; it behaves exactly like `--load-format mx`
(peers first, else disk; then serve). An unsupported vLLM gets the same clear error as `mx`.
"""

from __future__ import annotations

from typing import Any

import vllm

from modelexpress.vllm_plugin.versions import unsupported

_reason = unsupported(vllm.__version__)
MxModelLoader: type[Any]
if _reason is not None:
    from modelexpress.vllm_plugin.plugin import refusing_loader

    MxModelLoader = refusing_loader(_reason)
else:
    from modelexpress.vllm_plugin.loader import ModelExpressLoader

    MxModelLoader = ModelExpressLoader

__all__ = ["MxModelLoader"]
