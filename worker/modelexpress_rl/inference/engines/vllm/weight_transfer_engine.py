"""vLLM's `modelexpress` weight-transfer backend: a replica takes version N over NIXL, verified, or keeps its own.

vLLM imports these names from here (`vllm/distributed/weight_transfer/modelexpress_engine.py`) when a
server runs with `--weight-transfer-config '{"backend": "modelexpress"}'`, and calls the engine in each
worker process. One update is one `update_weights` with `{"version": N}`: the replica fetches what N
changed from whoever offers N (the trainer, or replicas that have it already), verifies it, then
installs the whole version through vLLM's layerwise reload, so the weights vLLM post-processes
(fused, packed, quantized) are rebuilt from checkpoint tensors. Until the fetch is complete and
verified nothing is touched; an install that fails puts the previous version back. Either way
`update_weights` raises with one line that says why, and the replica serves the version it had.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm.distributed.weight_transfer.base import (
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

from modelexpress import metrics
from modelexpress.p2p.memory import allocate_pool
from modelexpress.p2p.safetensors_dir import SafetensorsError, StoredTensor, load_into, scan
from modelexpress.refit import (
    Staged,
    UpdateError,
    VersionReceiver,
    layout_differences,
    layout_of,
    settings_and_registry,
)
from modelexpress.vllm_plugin.serving import local_rank, withdraw_served

log = logging.getLogger("modelexpress.rl")
VERSION = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass
class ModelExpressWeightTransferInitInfo(WeightTransferInitInfo):  # type: ignore[misc]  # vLLM ships no type information
    """What a replica needs to take versions (all optional on one machine)."""

    model_name: str = ""
    """The name versions are published under; empty: the served model's name (vLLM's `--model`)."""
    timeout_s: float = 300.0
    """How long an update waits for a source of its version before it fails."""
    serve: bool = True
    """Offer each installed version to the other replicas (the trainer then sends it about once)."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"init_info.timeout_s must be positive (got {self.timeout_s})")


@dataclass
class ModelExpressWeightTransferUpdateInfo(WeightTransferUpdateInfo):  # type: ignore[misc]  # vLLM ships no type information
    """One update: the version to take, and where to look first."""

    version: str = ""
    """The version to take (the trainer's step): letters, digits, '.', '_', '-'."""
    sources: list[str] = field(default_factory=list)
    """host:port of WorkerServices that offer it (the trainer's); the registry is asked too."""
    timeout_s: float | None = None
    """Overrides the init info's `timeout_s` for this update."""

    def __post_init__(self) -> None:
        if not VERSION.match(self.version):
            raise ValueError(
                f"update_info.version {self.version!r} is not a version: 1-128 letters, digits, '.', '_' or '-'"
            )


_Engine = WeightTransferEngine[ModelExpressWeightTransferInitInfo, ModelExpressWeightTransferUpdateInfo]


class ModelExpressWeightTransferEngine(_Engine):  # type: ignore[misc,valid-type]  # vLLM ships no type information
    """Takes weight versions published through ModelExpress (see the module's docstring)."""

    init_info_cls = ModelExpressWeightTransferInitInfo
    update_info_cls = ModelExpressWeightTransferUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiver: VersionReceiver | None = None
        self.timeout = ModelExpressWeightTransferInitInfo.timeout_s

    def init_transfer_engine(self, init_info: ModelExpressWeightTransferInitInfo) -> None:
        if self.receiver is not None:
            return  # a trainer that connects again keeps what this replica holds
        settings, registry = settings_and_registry("updates take their versions from the sources they name")
        settings = settings.for_local_rank(local_rank())  # the port the operator dials for this rank
        name = init_info.model_name or self.model_config.model
        self.timeout = init_info.timeout_s
        _serve_metrics(settings.metrics_port)
        self.receiver = VersionReceiver(name, settings, registry, serve=init_info.serve)
        log.info("taking weight versions of %s through ModelExpress (registry %s, serving them: %s)",
                 name, settings.metadata_backend if registry is not None else "none", init_info.serve)  # fmt: skip

    def start_weight_update(self) -> None:
        """Nothing to prepare: the model is touched only once a version is fetched and verified."""
        self._receiver()

    def finish_weight_update(self) -> None:
        """Nothing to finish: `update_weights` installs a version whole, or not at all."""

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class also synchronizes an accelerator after receiving: the install here is synchronous.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: ModelExpressWeightTransferUpdateInfo) -> None:
        receiver = self._receiver()
        if update_info.version == receiver.version:
            metrics.WEIGHT_UPDATES.labels("unchanged").inc()
            log.info("version %s is already the one served; nothing to do", update_info.version)
            return
        try:
            staged, installed = self._take(receiver, update_info)
        except Exception:
            metrics.WEIGHT_UPDATES.labels("failed").inc()
            raise
        metrics.WEIGHT_UPDATES.labels("installed").inc()
        origins = staged.by_origin()
        for origin, nbytes in origins.items():
            metrics.WEIGHT_UPDATE_BYTES.labels(origin).inc(nbytes)
        served = staged.result.served if staged.result is not None else {}
        where = ", ".join(
            f"{endpoint} ({'trainer' if endpoint in staged.named else 'replica'}, {n / 1e6:.1f} MB)"
            for endpoint, n in served.items()
        )
        log.info("version %s of %s installed: %d of %d tensors changed, %.1f MB pulled from %s in %.2fs; "
                 "installed in %.2fs", staged.version, receiver.model_name, len(staged.changed),
                 staged.manifest.tensor_count, staged.moved_bytes / 1e6, where or "nowhere", staged.seconds,
                 installed)  # fmt: skip

    def _take(
        self, receiver: VersionReceiver, update_info: ModelExpressWeightTransferUpdateInfo
    ) -> tuple[Staged, float]:
        """Fetch, check, install and commit one version; (what was staged, seconds to install)."""
        timeout = update_info.timeout_s or self.timeout
        try:
            staged = receiver.fetch(update_info.version, update_info.sources, timeout)
        except UpdateError as exc:
            raise RuntimeError(f"{exc}; still serving {self._serving(receiver)}") from None
        if receiver.manifest is None:
            self._check_first(receiver, staged)
        started = time.perf_counter()
        self._install(receiver, staged)
        installed = time.perf_counter() - started
        receiver.commit(staged)
        return staged, installed

    def _check_first(self, receiver: VersionReceiver, staged: Staged) -> None:
        """The first version must have the checkpoint's tensors, name for name and shape for shape (later
        ones are checked against the version held); nothing is installed otherwise."""
        stored = {t.spec.name: (t.spec.shape, t.spec.dtype) for t in _checkpoint(self.model_config.model)}
        offered = layout_of(staged.manifest)
        problems = layout_differences(stored, offered, dtypes=False)
        if problems:
            raise RuntimeError(
                f"version {staged.version} of {receiver.model_name} does not fit the model: {'; '.join(problems)}; "
                f"still serving {self._serving(receiver)}"
            )
        retyped = sorted(name for name, (_, dtype) in stored.items() if offered[name][1] != dtype)
        if retyped:
            log.info("version %s: %d tensor(s) arrive in another dtype than the checkpoint's (e.g. %s); vLLM "
                     "converts them as it loads", staged.version, len(retyped), retyped[0])  # fmt: skip

    def _install(self, receiver: VersionReceiver, staged: Staged) -> None:
        """Load the staged version into the model; on failure, load the previous one again and raise."""
        # An `mx` load format serves the post-processed weights as the checkpoint's: they are about to change.
        withdraw_served(self.model, f"it takes weight version {staged.version}")
        try:
            self._load(receiver.tensors(staged))
        except Exception as exc:
            reason = f"installing version {staged.version} failed ({type(exc).__name__}: {exc})"
            try:
                self._load(self._previous(receiver))
            except Exception as again:
                raise RuntimeError(
                    f"{reason}, and so did putting the previous version back ({again}): reload the model"
                ) from None
            raise RuntimeError(f"{reason}; still serving {self._serving(receiver)}") from None

    def _load(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        initialize_layerwise_reload(self.model)
        try:
            with disable_mtp_completeness_check():
                self.model.load_weights(tensors)
        finally:
            finalize_layerwise_reload(self.model, self.model_config)

    def _previous(self, receiver: VersionReceiver) -> Iterator[tuple[str, torch.Tensor]]:
        """The version served before this update: the held copy, else the checkpoint vLLM loaded."""
        if receiver.held is not None:
            yield from receiver.held_tensors()
            return
        stored = _checkpoint(self.model_config.model)
        for item in stored:  # one tensor at a time: no second copy of the model in memory
            pool = allocate_pool([item.spec])
            load_into(pool.tensors, [item])
            yield item.spec.name, pool.tensors[item.spec.name]

    def _receiver(self) -> VersionReceiver:
        if self.receiver is None:
            raise RuntimeError("init_weight_transfer_engine must come first (it names the model and the registry)")
        return self.receiver

    @staticmethod
    def _serving(receiver: VersionReceiver) -> str:
        return f"version {receiver.version}" if receiver.version is not None else "the weights it loaded"

    def shutdown(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
            self.receiver = None


@functools.cache  # one endpoint per process, whatever the number of engines
def _serve_metrics(port: int | None) -> None:
    try:
        metrics.serve_metrics(port)
    except OSError as exc:
        log.warning("MX_METRICS_PORT=%s: cannot serve metrics (%s)", port, exc)


def _checkpoint(model: str) -> list[StoredTensor]:
    """The checkpoint tensors of vLLM's `--model`: a directory, or a Hub repository in the local cache."""
    directory = Path(model)
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(model, local_files_only=True, allow_patterns=["*.safetensors"]))
    try:
        return scan(directory)
    except SafetensorsError as exc:
        raise RuntimeError(f"the checkpoint of {model} cannot be read back: {exc}") from None


__all__ = [
    "ModelExpressWeightTransferEngine",
    "ModelExpressWeightTransferInitInfo",
    "ModelExpressWeightTransferUpdateInfo",
]
