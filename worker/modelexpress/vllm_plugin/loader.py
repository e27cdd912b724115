"""The vLLM model loader of the `mx` formats: a thin adapter over `modelexpress.loader.WeightLoader`.

`load_model` is vLLM's own (`BaseModelLoader.load_model`: build the model, `load_weights`, then
post-process); only `load_weights` differs. It applies the capture rule to the freshly built model,
then either receives the loaded state from Ready peers over NIXL or loads from disk (streaming from
`MX_MODEL_URI` with runai-model-streamer when set, else vLLM's default loader) and moves the loaded
tensors into one pool. vLLM then post-processes as on any disk load; afterwards the pool is checked
to still hold the loaded state and served, and the rank is published for the next replica.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from concurrent.futures import Future
from typing import Any, ClassVar

import torch
from torch import nn
from vllm.config import ModelConfig, VllmConfig
from vllm.model_executor.model_loader.base_loader import BaseModelLoader
from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

from modelexpress.artifacts import FetchResult
from modelexpress.config.worker import load_worker_settings
from modelexpress.loader import LoadReport, WeightLoader
from modelexpress.loader.naming import ModelNameError, name_model
from modelexpress.loader.streamer import stream_tensors
from modelexpress.metrics import serve_metrics
from modelexpress.phases import Phases
from modelexpress.registry import open_registry
from modelexpress.vllm_plugin.artifacts import compile_key, fetch_in_background, serve_when_compiled
from modelexpress.vllm_plugin.identity import vllm_identity
from modelexpress.vllm_plugin.serving import attach, local_rank, withdraw_served

log = logging.getLogger("modelexpress.vllm")


def _hub_cache() -> Any:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


@functools.cache  # one endpoint per process, whatever the number of loads
def _start_metrics(port: int | None) -> None:
    try:
        serve_metrics(port)
    except OSError as exc:
        log.warning("MX_METRICS_PORT=%s: cannot serve metrics (%s)", port, exc)


def _weight_loader(vllm_config: VllmConfig, model_config: ModelConfig) -> tuple[WeightLoader | None, str]:
    """The rank's WeightLoader, or None and why the model cannot be exchanged peer to peer."""
    import vllm
    from vllm.distributed import parallel_state

    settings = load_worker_settings().for_local_rank(local_rank())
    try:
        named = name_model(
            model_config.model, model_config.revision, _hub_cache(), settings.model_name, settings.model_revision
        )
    except ModelNameError as exc:
        return None, str(exc)
    parallel = vllm_config.parallel_config
    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    identity = vllm_identity(
        model=named.name,
        revision=named.revision,
        engine_version=vllm.__version__,
        dtype=model_config.dtype,
        quantization=model_config.quantization,
        tp_size=parallel.tensor_parallel_size,
        pp_size=parallel.pipeline_parallel_size,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pp_group().rank_in_group,
        capability=capability,
    )
    log.info("%s is %s at %s (%s)", model_config.model, named.name, named.revision, named.how)
    _start_metrics(settings.metrics_port)
    return WeightLoader(identity, settings, open_registry(settings)), ""


class MxModelLoader(BaseModelLoader):  # type: ignore[misc]
    """`--load-format mx`: peers over NIXL first, else disk; then serve. The other formats are
    subclasses that change what it may do (`pulls`, `needs_peers`, `disk_reason`)."""

    load_format: ClassVar[str] = "mx"
    pulls: ClassVar[bool] = True
    """Ask Ready peers for the weights (and the compiled artifacts) before loading from disk."""
    needs_peers: ClassVar[bool] = False
    """Fail rather than load from disk when no peer delivers."""
    disk_reason: ClassVar[str | None] = None
    """Why the weights came from disk, when the format itself is the reason."""

    def __init__(self, load_config: Any) -> None:
        super().__init__(load_config)
        self._disk = DefaultModelLoader(dataclasses.replace(load_config, load_format="auto"))
        self._weights: WeightLoader | None = None
        self._why_not: str = ""
        self._report: LoadReport | None = None
        self._device: torch.device | None = None
        self._loading = False
        self._phases = Phases()
        self._weights_loaded = 0.0

    def download_model(self, model_config: ModelConfig) -> None:
        if not os.environ.get("MX_MODEL_URI"):
            self._disk.download_model(model_config)

    def get_all_weights(self, model_config: ModelConfig, model: nn.Module) -> Any:
        """vLLM's in-place reload reads the checkpoint through this; the served state goes stale."""
        withdraw_served(model, "its weights are being reloaded")
        return self._disk.get_all_weights(model_config, model)

    def load_model(self, vllm_config: VllmConfig, model_config: ModelConfig, prefix: str = "") -> nn.Module:
        device = vllm_config.device_config.device if self.load_config.device is None else self.load_config.device
        self._device = torch.device(device)
        self._weights, self._why_not = _weight_loader(vllm_config, model_config)
        self._phases = self._weights.phases if self._weights is not None else Phases()
        key = _artifact_key(vllm_config, self._weights)
        if self._weights is not None:  # the NIXL agent and the sources' links, while vLLM builds the model
            self._weights.prepare(pull=self.pulls)
        fetching = None
        if self._weights is not None and key is not None and self.pulls:
            fetching = fetch_in_background(self._weights.sources, key, self._weights.settings)
            _time_artifacts(fetching, self._phases)
        self._loading = True
        try:
            model: nn.Module = super().load_model(vllm_config, model_config, prefix)
            # what vLLM did after load_weights: process_weights_after_loading (repacking, quantization)
            self._phases.add("postprocess", time.perf_counter() - self._weights_loaded)
        finally:
            self._loading = False
            if fetching is not None:  # in place, or not at all, before vLLM's first forward pass compiles
                _report_artifacts(fetching)
        weights, report = self._weights, self._report
        if weights is not None and report is not None:
            weights.seal()
            weights.publish(report)
            attach(model, weights)  # serves as long as the model lives
            if key is not None and weights.source is not None:
                serve_when_compiled(weights.source.server, key, vllm_config)
        elif report is not None:
            log.info("%s; not exchanged peer to peer", report.summary(model_config.model, 0))
            report.record()
        return model

    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        if not self._loading:  # a reload outside load_model: new weights, so stop serving the old ones
            withdraw_served(model, "its weights are being reloaded")
            self._load_from_disk(model, model_config)
            return
        started = time.perf_counter()
        weights = self._weights
        reason = self._why_not or (weights.check(model) if weights is not None else None)
        report = weights.receive(model, self._device) if weights is not None and not reason and self.pulls else None
        if report is None:
            if self.needs_peers:
                raise RuntimeError(_target_failure(weights, reason))
            with self._phases.timing("disk"):
                self._load_from_disk(model, model_config)
            if weights is not None:
                report = weights.adopt(model, self._device, started, reason=None if reason else self.disk_reason)
            else:
                nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
                report = LoadReport("disk", reason or "", nbytes, time.perf_counter() - started, phases=self._phases)
        self._report = report
        self._weights_loaded = time.perf_counter()

    def _load_from_disk(self, model: nn.Module, model_config: ModelConfig) -> None:
        uri = os.environ.get("MX_MODEL_URI")
        if uri:
            model.load_weights(stream_tensors(uri))  # type: ignore[operator]
        else:
            self._disk.load_weights(model, model_config)


class MxSourceLoader(MxModelLoader):
    """`--load-format mx-source`: load from disk, never asking peers, then serve (the first replica)."""

    load_format = "mx-source"
    pulls = False
    disk_reason = "--load-format mx-source"


class MxTargetLoader(MxModelLoader):
    """`--load-format mx-target`: from peers only; without a peer that delivers, the load fails."""

    load_format = "mx-target"
    needs_peers = True


class ModelExpressLoader(MxModelLoader):
    """vLLM's built-in `--load-format modelexpress` (it imports `modelexpress.engines.vllm.loader`): `mx`."""

    load_format = "modelexpress"


LOADERS: dict[str, type[MxModelLoader]] = {
    cls.load_format: cls for cls in (MxModelLoader, MxSourceLoader, MxTargetLoader)
}
"""The formats this plugin registers with vLLM (`modelexpress` is vLLM's own name, imported by it)."""


def _artifact_key(vllm_config: VllmConfig, weights: WeightLoader | None) -> dict[str, str] | None:
    """The compile key, when artifacts travel for this rank (MX_ARTIFACT_TRANSFER and vLLM compiles)."""
    if weights is None or not weights.settings.artifact_transfer:
        return None
    return compile_key(vllm_config, weights.identity)


def _time_artifacts(fetching: Future[FetchResult], phases: Phases) -> None:
    """Add the fetch's wall time to the load's `artifacts` phase when it ends (it runs beside the build)."""
    launched = time.perf_counter()
    fetching.add_done_callback(lambda _: phases.add("artifacts", time.perf_counter() - launched))


def _report_artifacts(fetching: Future[FetchResult]) -> None:
    try:
        result = fetching.result()
    except Exception as exc:
        log.warning("compiled artifacts not used (failed): %s; vLLM compiles", exc)
        return
    (log.warning if result.outcome in ("refused", "failed") else log.info)("%s", result.summary())


def _target_failure(weights: WeightLoader | None, reason: str | None) -> str:
    if weights is None or reason:
        return f"--load-format mx-target: this model cannot be received from peers: {reason}"
    found = weights.sources()
    detail = "every source failed (see the warnings above)" if found else "no Ready source in the registry"
    return (
        f"--load-format mx-target: no peer delivered {weights.identity.model_name} rank {weights.identity.rank} "
        f"({detail}); start a replica with --load-format mx or mx-source first"
    )
