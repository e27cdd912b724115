"""Source registries: where workers record that they hold a model, and where targets find sources.

One interface, several backends chosen by `MX_METADATA_BACKEND`: `embedded` (a SQLite file, no
cluster), `kubernetes` (ModelMetadata resources, written by the operator), `redis`.
"""

from modelexpress.p2p.records import SourceRecord
from modelexpress.registry.base import RegistryUnavailableError, SourceRegistry, open_registry
from modelexpress.registry.embedded import EmbeddedRegistry

__all__ = ["EmbeddedRegistry", "RegistryUnavailableError", "SourceRecord", "SourceRegistry", "open_registry"]
