"""Integrity of a cached model on disk: its files are where the database says, whole, and unaltered."""

from __future__ import annotations

import re
from pathlib import Path

from modelexpress.cache.database import CachedModel
from modelexpress.cache.transfers import file_digest

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_model(model: CachedModel) -> list[str]:
    """What is wrong with a cached model (empty: nothing). Sizes and counts are checked against the
    database; in the hub layout each file whose blob is named by a sha256 is re-hashed."""
    root = Path(model.path)
    if not root.is_dir():
        return [f"{root} is missing"]
    problems: list[str] = []
    files = 0
    size = 0
    for path in sorted(root.rglob("*")):
        if path.name.endswith(".incomplete"):
            continue
        if path.is_symlink() and not path.exists():
            problems.append(f"{path.relative_to(root)} points at a missing blob")
            continue
        if not path.is_file():
            continue
        files += 1
        size += path.stat().st_size
        blob = path.resolve()
        if path.is_symlink() and _SHA256.match(blob.name) and file_digest(blob, "sha256") != blob.name:
            problems.append(f"{path.relative_to(root)} does not match its sha256 {blob.name[:12]}…")
    if model.provider != "local":
        if files != model.files:
            problems.append(f"{files} file(s) on disk, {model.files} recorded")
        if size != model.size_bytes:
            problems.append(f"{size} bytes on disk, {model.size_bytes} recorded")
    return problems
