"""Pull a model's tensors from peer workers into local (pooled) memory, verified, or fall back to disk.

1. Link every offered source (`sources`, `links`): it must be Ready, have exactly our identity, and
   serve a manifest matching our tensors by name, shape and dtype.
2. Cut our tensors into chunks (`stream`) and stripe the chunk READs across the sources, with a
   bounded number in flight per source and a deadline per READ (`transfer`, `book`).
3. Check each tensor as its bytes land, in a thread of its own (`verify`), as much as the policy asks
   (`sampling`); a mismatch reads the tensor again from another source (`repairs`).
4. A source that fails (READ error, missed deadline, status stream broken) is abandoned and its
   chunks go to the others; with none left, the caller's disk loader fills what is missing.
The target memory is written in place throughout: a retry never holds a second copy of the model.
Nothing is reported loaded unless every tensor is verified.
"""

from modelexpress.p2p.pull.links import PreparedSources, prepare_sources
from modelexpress.p2p.pull.options import (
    VERIFICATIONS,
    Discover,
    Fallback,
    NoSourceError,
    Progress,
    PullError,
    PullOptions,
    PullResult,
    Verification,
)
from modelexpress.p2p.pull.transfer import pull

__all__ = [
    "VERIFICATIONS", "Discover", "Fallback", "NoSourceError", "PreparedSources", "Progress", "PullError",
    "PullOptions", "PullResult", "Verification", "prepare_sources", "pull",
]  # fmt: skip
