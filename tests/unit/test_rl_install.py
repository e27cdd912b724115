"""The replica engine's install: vLLM's layerwise reload on a small module; a failed install puts back
the version held, whatever part of the new one was loaded before the failure."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch
from torch import nn

from modelexpress.config.worker import load_worker_settings
from modelexpress.p2p.memory import adopt_tensors
from modelexpress.refit import Staged, VersionReceiver, version_identity
from tests.helpers.manifests import build_manifest

REFUSED = 99.0


class Model(nn.Module):
    """Loads weights the way vLLM's models do (each parameter's weight_loader); refuses a marked norm."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)
        self.norm = nn.LayerNorm(4, bias=False)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        from vllm.model_executor.model_loader.weight_utils import default_weight_loader

        params = dict(self.named_parameters())
        for name, tensor in weights:
            if name == "norm.weight" and tensor[0] == REFUSED:
                raise KeyError("norm.weight: the model cannot take it")
            param = params[name]
            getattr(param, "weight_loader", default_weight_loader)(param, tensor)


def _version(proj: float, norm: float) -> dict[str, torch.Tensor]:
    return {"proj.weight": torch.full((4, 4), proj), "norm.weight": torch.full((4,), norm)}


def _staged(version: str, tensors: dict[str, torch.Tensor]) -> Staged:
    layout = adopt_tensors(tensors)
    return Staged(version, build_manifest(version_identity("org/m", version), layout), list(tensors), layout, None, 0)


@pytest.fixture
def engine_and_receiver() -> tuple[object, VersionReceiver, Model]:
    from vllm.model_executor.model_loader.reload import record_metadata_for_reloading

    from modelexpress_rl.inference.engines.vllm.weight_transfer_engine import ModelExpressWeightTransferEngine

    model = Model()
    record_metadata_for_reloading(model)  # what vLLM does when it builds a model
    held = _version(1.0, 2.0)
    with torch.no_grad():
        model.proj.weight.copy_(held["proj.weight"])
        model.norm.weight.copy_(held["norm.weight"])
    engine = object.__new__(ModelExpressWeightTransferEngine)  # the install needs no vLLM config
    engine.model, engine.model_config = model, None
    receiver = VersionReceiver("org/m", load_worker_settings(), None, serve=False)
    receiver.held = adopt_tensors(held)
    receiver.manifest = build_manifest(version_identity("org/m", "3"), receiver.held)
    receiver.version = "3"
    return engine, receiver, model


def test_a_failed_install_puts_the_held_version_back(
    engine_and_receiver: tuple[object, VersionReceiver, Model],
) -> None:
    engine, receiver, model = engine_and_receiver
    with pytest.raises(RuntimeError, match=r"installing version 4 failed \(KeyError: .*\); still serving version 3"):
        engine._install(receiver, _staged("4", _version(5.0, REFUSED)))  # type: ignore[attr-defined]
    # proj had taken version 4's values before the norm failed: it is version 3's again
    assert torch.equal(model.proj.weight, torch.full((4, 4), 1.0))
    assert torch.equal(model.norm.weight, torch.full((4,), 2.0))


def test_a_version_installs_whole_after_a_failed_one(
    engine_and_receiver: tuple[object, VersionReceiver, Model],
) -> None:
    engine, receiver, model = engine_and_receiver
    with pytest.raises(RuntimeError):
        engine._install(receiver, _staged("4", _version(5.0, REFUSED)))  # type: ignore[attr-defined]
    engine._install(receiver, _staged("5", _version(5.0, 3.0)))  # type: ignore[attr-defined]
    assert torch.equal(model.proj.weight, torch.full((4, 4), 5.0))
    assert torch.equal(model.norm.weight, torch.full((4,), 3.0))
