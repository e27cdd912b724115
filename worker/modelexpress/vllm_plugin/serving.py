"""What a vLLM model serves to peers while it lives, and where: attached to the model, withdrawn with it.

A rank that loaded through an `mx` format serves its post-processed weights; anything that changes
those weights in place (vLLM's reload, an RL weight update) must withdraw them first, or peers would
be handed new bytes under the old identity. Ranks sharing a pod listen on consecutive ports, by their
rank on the node.
"""

from __future__ import annotations

import logging

from torch import nn

from modelexpress.loader import WeightLoader

log = logging.getLogger("modelexpress.vllm")
_ATTRIBUTE = "_modelexpress_loader"


def attach(model: nn.Module, weights: WeightLoader) -> None:
    """Keep `weights` (and the WorkerService serving them) alive as long as `model`."""
    model.__dict__[_ATTRIBUTE] = weights


def withdraw_served(model: nn.Module, why: str) -> bool:
    """Stop serving what `model` serves to peers (its record goes first); False when it served nothing."""
    weights = model.__dict__.pop(_ATTRIBUTE, None)
    if not isinstance(weights, WeightLoader):
        return False
    log.info("%s rank %d stops serving: %s", weights.identity.model_name, weights.identity.rank, why)
    weights.close()
    return True


def local_rank() -> int:
    """This process's rank on its node (vLLM's world group): the offset of its WorkerService port."""
    from vllm.distributed import parallel_state

    return int(parallel_state.get_world_group().local_rank)
