"""The source side: the one artifact manifest a worker serves, and bounded reads of its files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from modelexpress.artifacts.manifest import ArtifactFile, ArtifactManifest, inside

CHUNK_BYTES = 1 << 20


class ArtifactStore:
    """Serves exactly the files of `manifest`, read from `roots`; any other path is unknown."""

    def __init__(self, manifest: ArtifactManifest, roots: dict[str, Path]) -> None:
        self.manifest = manifest
        self.roots = roots
        self._files: dict[tuple[str, str], ArtifactFile] = {(f.root, f.path): f for f in manifest.files}

    def read(self, root: str, path: str, offset: int = 0, length: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) chunks of at most CHUNK_BYTES; KeyError for a file the manifest does not list."""
        listed = self._files.get((root, path))
        if listed is None:
            raise KeyError(f"{root}:{path} is not an artifact of this worker")
        end = listed.size if length == 0 else min(listed.size, offset + length)
        with inside(self.roots[root], path).open("rb") as f:
            f.seek(offset)
            position = offset
            while position < end:
                data = f.read(min(CHUNK_BYTES, end - position))
                if not data:  # shorter than listed: the target's digest check refuses it
                    return
                yield position, data
                position += len(data)
