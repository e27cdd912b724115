"""ModelExpress: the worker library installed in vLLM pods and cache Jobs, and the `modelexpress` CLI.

The package holds the CRD API types, layered configuration, the gRPC contracts and (in later layers)
the transfer engine, registries and downloaders. It never imports the operator package.
"""

from typing import Any

API_GROUP = "modelexpress.io"
API_VERSION = "v1alpha1"
PEER_TOKEN_FILE = "/var/run/secrets/modelexpress/token"
"""Where a worker (and the operator) finds its projected peer token unless told otherwise."""
WORKER_TLS_SERVER_NAME = "modelexpress-worker"
"""The name every worker's certificate carries and callers check (workers are dialled by IP)."""


def __getattr__(name: str) -> Any:
    """`__version__` on first use: importlib.metadata costs a tenth of a light command's start-up.
    `configure_vllm_logging` (what vLLM's `modelexpress` weight-transfer backend calls on import) from
    `modelexpress.config.logs`, looked up here so that this package's face imports none of its layers."""
    if name == "configure_vllm_logging":
        import importlib

        return importlib.import_module("modelexpress.config.logs").configure_vllm_logging
    if name != "__version__":
        raise AttributeError(f"module 'modelexpress' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("modelexpress")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found


__all__ = [
    "API_GROUP", "API_VERSION", "PEER_TOKEN_FILE", "WORKER_TLS_SERVER_NAME", "__version__", "configure_vllm_logging",
]  # fmt: skip
