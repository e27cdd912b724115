"""The trainer's side of vLLM's `modelexpress` backend: `WeightTransferTrainerFactory.trainer_init(...)`.

    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
    from modelexpress_rl import ModelExpressTrainerInitInfo, FanOutClient

    engine = WeightTransferTrainerFactory.trainer_init(
        ModelExpressTrainerInitInfo(model_name="/models/llama"),   # the replicas' --model
        client=FanOutClient([HTTPVLLMWeightSyncClient(url) for url in replica_urls]),
        source=ModuleSource(policy),
    )
    for step in ...:
        train(policy)
        engine.send_weights()          # version 1, 2, ... (or send_weights(version=step))

Nothing is copied: the policy's tensors are registered with NIXL where they lie and offered under the
new version; each replica pulls what changed (all of it the first time) and installs it. With a cap
on the trainer's pullers (`max_pullers`), the replicas beyond it take the version from replicas that
have it already, so the trainer's link carries the version about once. The tensors must not change
until `send_weights` returns; afterwards the trainer stops offering that version (replicas still do).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from vllm.distributed.weight_transfer.base import (
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    VLLMWeightSyncClient,
    WeightSource,
)

from modelexpress.refit import WeightPublisher, settings_and_registry

log = logging.getLogger("modelexpress.rl")


@dataclass
class ModelExpressTrainerInitInfo(TrainerInitInfo):  # type: ignore[misc]  # vLLM ships no type information
    """The trainer's settings for the `modelexpress` backend; only `model_name` has no default."""

    backend: ClassVar[str] = "modelexpress"
    model_name: str = ""
    """The name the replicas take versions under: their `--model`, unless their init info names another."""
    first_version: int = 1
    """The version of the first `send_weights()` without an explicit version; later ones count up."""
    timeout_s: float = 300.0
    """How long a replica waits for a source of a version (sent to the replicas at init)."""
    max_pullers: int = 0
    """Replicas the trainer serves at once (0: no cap); the others take the version from replicas."""
    rank: int = 0  # one trainer process on one machine: the sender

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("ModelExpressTrainerInitInfo.model_name is required: the replicas' --model")
        if self.max_pullers < 0:
            raise ValueError(f"ModelExpressTrainerInitInfo.max_pullers must be 0 or more (got {self.max_pullers})")


class ModelExpressTrainerWeightTransferEngine(TrainerWeightTransferEngine[ModelExpressTrainerInitInfo]):  # type: ignore[misc]  # vLLM ships no type information
    """Publishes the trainer's tensors as versions and drives the replicas' four-step update."""

    init_info_cls = ModelExpressTrainerInitInfo

    def __init__(
        self, *, client: VLLMWeightSyncClient, source: WeightSource, publisher: WeightPublisher, next_version: int,
        is_sender: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.publisher = publisher
        self.next_version = next_version
        self.sent: list[str] = []

    @classmethod
    def trainer_init(
        cls, init_info: ModelExpressTrainerInitInfo, *, client: VLLMWeightSyncClient, source: WeightSource | None = None
    ) -> Self:
        if source is None:
            raise ValueError("the modelexpress backend needs the trainer's tensors: pass source=ModuleSource(model)")
        settings, registry = settings_and_registry(
            "replicas reach the trainer only, never each other", max_pullers=init_info.max_pullers
        )
        publisher = WeightPublisher(init_info.model_name, settings, registry)
        engine = cls(client=client, source=source, publisher=publisher, next_version=init_info.first_version,
                     is_sender=init_info.is_sender)  # fmt: skip
        if engine.is_sender:
            client.init_weight_transfer_engine({"model_name": init_info.model_name, "timeout_s": init_info.timeout_s})
        return engine

    def send_weights(self, version: str | int | None = None) -> str:
        """Publish the source's tensors as `version` (default: the next number) and have every replica take
        it; returns the version. Raises, naming the replica's reason, when one could not."""
        name = str(version) if version is not None else str(self.next_version)
        if version is None:
            self.next_version += 1
        if not self.is_sender:
            return name
        assert self.source is not None  # trainer_init insists
        started = time.perf_counter()
        self.publisher.publish(name, iter(self.source))
        try:
            self.client.start_weight_update()
            self.client.update_weights({"version": name, "sources": [self.publisher.endpoint]})
            self.client.finish_weight_update(weight_version=name)
        finally:
            # The caller trains again once this returns: the tensors stop being version `name`.
            self.publisher.withdraw(f"version {name} sent; the trainer's tensors change from here on")
        self.sent.append(name)
        log.info("version %s of %s sent in %.2fs", name, self.publisher.model_name, time.perf_counter() - started)
        return name

    def shutdown(self) -> None:
        self.publisher.close()


class FanOutClient:
    """One `VLLMWeightSyncClient` over several replicas: each call goes to all of them at once and returns
    when all have answered (the first failure is raised, naming the replica)."""

    def __init__(self, clients: list[Any]) -> None:
        if not clients:
            raise ValueError("FanOutClient needs at least one client")
        self.clients = clients

    def _all(self, method: str, *args: Any, **kwargs: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.clients)) as pool:
            futures = [pool.submit(getattr(c, method), *args, **kwargs) for c in self.clients]
        for index, future in enumerate(futures):
            exc = future.exception()
            if exc is not None:
                raise RuntimeError(f"replica {index} ({_describe(self.clients[index])}): {method}: {exc}") from exc

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._all("init_weight_transfer_engine", init_info)

    def start_weight_update(self) -> None:
        self._all("start_weight_update")

    def update_weights(self, update_info: Any) -> None:
        self._all("update_weights", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", weight_version)


def _describe(client: Any) -> str:
    return str(getattr(client, "base_url", type(client).__name__))
