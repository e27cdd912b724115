"""The module path vLLM's built-in `--load-format modelexpress` imports: `modelexpress.engines.vllm.loader`."""
