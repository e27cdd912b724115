"""The vLLM plugin (`vllm.general_plugins` entry point `modelexpress`): registers the `mx` load format.

`VLLM_PLUGINS=modelexpress` (or vLLM loading every plugin) calls `register()` in each process; with
`MX_REGISTER_LOADERS=1` (the default) it registers `mx` (peers first, else disk, then serve),
`mx-source` (always disk, then serve) and `mx-target` (peers only; fails when none is Ready).
Supported vLLM: 0.10 to 0.12 (`register_model_loader`, `BaseModelLoader.load_model(vllm_config,
model_config)`); the adapter is thin over `modelexpress.loader`, which holds the logic.
"""

from modelexpress.vllm_plugin.plugin import LOAD_FORMATS, register

__all__ = ["LOAD_FORMATS", "register"]
