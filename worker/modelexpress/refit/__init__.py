"""New versions of a model's weights while it serves: published by a trainer, fetched by replicas.

`WeightPublisher` (the trainer) offers its tensors, where they lie, as version after version;
`VersionReceiver` (a replica) fetches only what a version changed, verified, beside the version it
holds, commits it once installed, and offers it to the other replicas. The engine adapters
(`modelexpress_rl`) drive both through an engine's own weight-update API.
"""

from modelexpress.refit.environment import settings_and_registry
from modelexpress.refit.publisher import WeightPublisher
from modelexpress.refit.receiver import Staged, VersionReceiver
from modelexpress.refit.versions import (
    CHECKPOINT_ENGINE,
    LayoutMismatchError,
    UpdateError,
    changed_tensors,
    identity_name,
    layout_differences,
    layout_of,
    version_identity,
)

__all__ = [
    "CHECKPOINT_ENGINE", "LayoutMismatchError", "Staged", "UpdateError", "VersionReceiver", "WeightPublisher",
    "changed_tensors", "identity_name", "layout_differences", "layout_of", "settings_and_registry", "version_identity",
]  # fmt: skip
