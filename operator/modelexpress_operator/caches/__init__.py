"""Reconciling ModelCaches: a PVC and a download Job per attempt from the spec, the status from the Jobs.

One module per concern: `naming` (the Jobs' names and attempts), `refusals` (what the API server said),
`sizing` (the source's size, or a sizing Job), `kube` (the Kubernetes I/O), `status` (the status
machine, pure), `eviction` (eviction and retention), and `controller`, which puts them together.
"""

from modelexpress_operator.caches.controller import CacheController, Reconciled
from modelexpress_operator.caches.status import retry_due

__all__ = ["CacheController", "Reconciled", "retry_due"]
