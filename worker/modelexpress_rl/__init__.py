"""ModelExpress for RL post-training: new weight versions to serving replicas over NIXL, through vLLM's API.

Importing this package registers the trainer's engine in vLLM's `WeightTransferTrainerFactory` under
`"modelexpress"` (the replicas' engine is registered by vLLM itself). The machinery is framework-free
in `modelexpress.refit`; this package adapts it to vLLM's weight-transfer API. See docs/rl.md.
"""

from __future__ import annotations

from typing import Any

BACKEND = "modelexpress"
_TRAINER = ("modelexpress_rl.trainer.weight_transfer_engine", "ModelExpressTrainerWeightTransferEngine")


def register_trainer_engine() -> bool:
    """Register the trainer's engine with vLLM (once); False when vLLM is not importable."""
    try:
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
    except ImportError:
        return False
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, *_TRAINER)
    return True


def __getattr__(name: str) -> Any:
    """The trainer's classes on first use (they import vLLM)."""
    if name in ("ModelExpressTrainerInitInfo", "ModelExpressTrainerWeightTransferEngine", "FanOutClient"):
        from modelexpress_rl.trainer import weight_transfer_engine

        return getattr(weight_transfer_engine, name)
    raise AttributeError(f"module 'modelexpress_rl' has no attribute {name!r}")


register_trainer_engine()

__all__ = [
    "BACKEND", "FanOutClient", "ModelExpressTrainerInitInfo", "ModelExpressTrainerWeightTransferEngine",
    "register_trainer_engine",
]  # fmt: skip
