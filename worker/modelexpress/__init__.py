"""ModelExpress: the worker library installed in vLLM pods and cache Jobs, and the `modelexpress` CLI.

The package holds the CRD API types, layered configuration, the gRPC contracts and (in later layers)
the transfer engine, registries and downloaders. It never imports the operator package.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelexpress")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

API_GROUP = "modelexpress.io"
API_VERSION = "v1alpha1"

__all__ = ["API_GROUP", "API_VERSION", "__version__"]
