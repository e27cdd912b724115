"""Listing a source's compile caches: every regular file of the given trees, with its size and SHA-256."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from modelexpress.artifacts.manifest import ArtifactFile, ArtifactManifest, safe_relative

log = logging.getLogger(__name__)
STAGING_PREFIX = ".mx-incoming-"
_SKIPPED_SUFFIXES = (".lock", ".tmp")


def sha256_file(path: Path, block: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _skipped(name: str) -> bool:
    """Lock files, temporaries and a target's own staging never travel."""
    return name.startswith(STAGING_PREFIX) or name.endswith(_SKIPPED_SUFFIXES) or ".tmp" in name


def collect(
    key: dict[str, str], trees: list[tuple[str, Path, str]], skip: Callable[[str], bool] | None = None
) -> ArtifactManifest:
    """The manifest of `trees`, each (root name, root directory, subdirectory of it; '' for all of it),
    less the files whose path relative to their root `skip` names.

    Symbolic links are not followed and not served: a served file is a regular file inside its root.
    """
    files: list[ArtifactFile] = []
    seen: set[tuple[str, str]] = set()
    for root_name, root, sub in trees:
        top = root / sub if sub else root
        if not top.is_dir():
            continue
        for folder, dirs, names in os.walk(top, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not _skipped(d))
            for name in sorted(names):
                path = Path(folder) / name
                if _skipped(name) or path.is_symlink() or not path.is_file():
                    continue
                relative = path.relative_to(root).as_posix()
                if (root_name, relative) in seen or (skip is not None and skip(relative)):
                    continue
                try:
                    safe_relative(relative)
                except ValueError as exc:
                    log.debug("not serving %s: %s", path, exc)
                    continue
                seen.add((root_name, relative))
                files.append(
                    ArtifactFile(root=root_name, path=relative, size=path.stat().st_size, sha256=sha256_file(path))
                )
    return ArtifactManifest(key=key, files=files)
