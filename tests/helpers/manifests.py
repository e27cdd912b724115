"""Manifests for tests, as a source builds them: checksums computed with the algorithm it would choose."""

from __future__ import annotations

from modelexpress.p2p.checksum import checksums as compute_checksums
from modelexpress.p2p.checksum import choose_algorithm
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest, TensorEntry
from modelexpress.p2p.memory import TensorLayout


def build_manifest(
    identity: WorkerIdentity, layout: TensorLayout, checksums: dict[str, int] | None = None, algorithm: str = "auto"
) -> Manifest:
    """The layout's manifest; `checksums` given are published as they are (a test's own values)."""
    chosen = choose_algorithm(layout, algorithm)
    return Manifest.build(
        identity, layout, compute_checksums(layout, chosen) if checksums is None else checksums, chosen
    )


def entries_by_name(manifest: Manifest) -> dict[str, TensorEntry]:
    return dict(zip(manifest.columns.names, manifest.tensors, strict=True))
