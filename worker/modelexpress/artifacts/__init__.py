"""Compiled artifacts that travel from peers: an engine's compile caches, served and fetched as files.

A source lists the files of its compile caches once its engine finished writing them (`collect`),
with a digest each and the key they were compiled under, and serves them over its WorkerService
(`ArtifactStore`). A target whose own key is equal fetches them in bounded, resumable reads, checks
every digest, and only then moves them into its own caches (`fetch_artifacts`); anything else —
another key, an unsafe path, a set too large, a corrupt file — is refused with one reason and the
engine compiles as it would have. Framework-free: the engine adapter supplies the key and the roots.
"""

from modelexpress.artifacts.collect import collect
from modelexpress.artifacts.fetch import FetchResult, fetch_artifacts
from modelexpress.artifacts.manifest import ArtifactFile, ArtifactManifest, ArtifactRefusedError
from modelexpress.artifacts.store import ArtifactStore

__all__ = [
    "ArtifactFile",
    "ArtifactManifest",
    "ArtifactRefusedError",
    "ArtifactStore",
    "FetchResult",
    "collect",
    "fetch_artifacts",
]
