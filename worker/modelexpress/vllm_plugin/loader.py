"""The vLLM model loader of the `mx` formats: a thin adapter over `modelexpress.loader.WeightLoader`.

`load_model` builds the model as vLLM does, then:
- with a Ready source of this rank's identity: post-processes the (uninitialised) weights so the
  module has its final layout, and READs every tensor from the source over NIXL;
- otherwise (or if every source fails: the model is rebuilt): loads from disk, streaming from
  `MX_MODEL_URI` with runai-model-streamer when set, else vLLM's default loader (the ModelCache PVC
  through `HF_HUB_CACHE`), and post-processes;
then serves the weights and publishes itself, for the next instance of the same layout.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, cast

import torch
from torch import nn
from vllm.config import ModelConfig, VllmConfig
from vllm.model_executor.model_loader.base_loader import BaseModelLoader
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
from vllm.model_executor.model_loader.utils import initialize_model, process_weights_after_loading

from modelexpress.config.worker import WorkerSettings
from modelexpress.loader import WeightLoader
from modelexpress.loader.streamer import stream_tensors
from modelexpress.registry import open_registry
from modelexpress.vllm_plugin.identity import vllm_identity

log = logging.getLogger("modelexpress.vllm")


def _default_dtype(dtype: torch.dtype) -> Any:
    try:
        from vllm.utils.torch_utils import set_default_torch_dtype
    except ImportError:  # vLLM < 0.11
        from vllm.model_executor.model_loader.utils import set_default_torch_dtype
    return set_default_torch_dtype(dtype)


def _identity(vllm_config: VllmConfig, model_config: ModelConfig) -> Any:
    import vllm
    from vllm.distributed import parallel_state

    parallel = vllm_config.parallel_config
    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    return vllm_identity(
        model=model_config.model,
        revision=model_config.revision,
        engine_version=vllm.__version__,
        dtype=model_config.dtype,
        quantization=model_config.quantization,
        tp_size=parallel.tensor_parallel_size,
        pp_size=parallel.pipeline_parallel_size,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pp_group().rank_in_group,
        capability=capability,
    )


def loader_class(load_format: str) -> type[BaseModelLoader]:
    class MxModelLoader(BaseModelLoader):  # type: ignore[misc]
        """Peers over NIXL first, else disk; then serve (one class per registered format)."""

        def __init__(self, load_config: Any) -> None:
            super().__init__(load_config)
            self._disk = DefaultModelLoader(dataclasses.replace(load_config, load_format="auto"))

        def download_model(self, model_config: ModelConfig) -> None:
            if not os.environ.get("MX_MODEL_URI"):
                self._disk.download_model(model_config)

        def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
            uri = os.environ.get("MX_MODEL_URI")
            if uri:
                model.load_weights(stream_tensors(uri))  # type: ignore[operator]
            else:
                self._disk.load_weights(model, model_config)

        def load_model(self, vllm_config: VllmConfig, model_config: ModelConfig, prefix: str = "") -> nn.Module:
            device = torch.device(vllm_config.device_config.device)
            settings = WorkerSettings()
            registry = open_registry(settings)
            hf_config = model_config.hf_config.to_dict() if hasattr(model_config.hf_config, "to_dict") else None
            weights = WeightLoader(_identity(vllm_config, model_config), settings, registry, hf_config)

            def build() -> nn.Module:
                with _default_dtype(model_config.dtype), device:
                    return cast(
                        nn.Module, initialize_model(vllm_config=vllm_config, model_config=model_config, prefix=prefix)
                    )

            model = build()
            report = None
            if load_format != "mx-source" and weights.sources():
                process_weights_after_loading(model, model_config, device)
                report = weights.receive(model, device)
                if report is None:
                    model = build()
            if report is None:
                if load_format == "mx-target":
                    raise RuntimeError(
                        f"--load-format mx-target: no Ready source of {weights.identity.model_name} rank "
                        f"{weights.identity.rank} could be used ({weights.gate or 'none found or all failed'})"
                    )
                self.load_weights(model, model_config)
                process_weights_after_loading(model, model_config, device)
                report = weights.adopt(model, device)
            weights.publish(report)
            model.__dict__["_modelexpress_loader"] = weights  # serves as long as the model lives
            return model.eval()

    MxModelLoader.__name__ = f"MxModelLoader_{load_format.replace('-', '_')}"
    return MxModelLoader
