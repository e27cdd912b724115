"""Framework-agnostic weight loading: from a peer over NIXL when a Ready source of the same layout
exists, else from disk (safetensors or runai-model-streamer), then serve as a source for others.
Engine adapters (the vLLM plugin) stay thin over `WeightLoader`."""

from modelexpress.loader.core import LoadReport, WeightLoader
from modelexpress.loader.features import feature_gate
from modelexpress.loader.rehome import rehome

__all__ = ["LoadReport", "WeightLoader", "feature_gate", "rehome"]
