"""Framework-agnostic weight loading: from a peer over NIXL when a Ready source of the same layout
exists, else from disk (safetensors or runai-model-streamer), then serve as a source for others.
What travels is the loaded state, before post-processing (`modelexpress.loader.capture`). Engine
adapters (the vLLM plugin) stay thin over `WeightLoader`."""

from modelexpress.loader.capture import capture_gate
from modelexpress.loader.core import LoadReport, WeightLoader
from modelexpress.loader.rehome import attach, plan_pool, rehome

__all__ = ["LoadReport", "WeightLoader", "attach", "capture_gate", "plan_pool", "rehome"]
