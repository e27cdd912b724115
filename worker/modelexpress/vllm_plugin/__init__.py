"""The vLLM plugin (`vllm.general_plugins` entry point `modelexpress`): registers the `mx` load format.

`VLLM_PLUGINS=modelexpress` (or vLLM loading every plugin) calls `register()` in each process; with
`MX_REGISTER_LOADERS=1` (the default) it registers `mx` (peers first, else disk, then serve),
`mx-source` (always disk, then serve) and `mx-target` (peers only; fails when none is Ready).
Supported vLLM: 0.32 and 0.33 (`versions.py`); another version gets formats that fail at once with
that message. The adapter is thin over `modelexpress.loader`, which holds the logic.
"""

from modelexpress.vllm_plugin.plugin import LOAD_FORMATS, register

__all__ = ["LOAD_FORMATS", "register"]
