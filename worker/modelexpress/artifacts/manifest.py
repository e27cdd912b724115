"""The artifact manifest: which files, under which cache roots, compiled under which key (pydantic)."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field, ValidationError, field_validator

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.units import size

ROOT_NAME = r"^[a-z][a-z0-9-]{0,31}$"
_MAX_PATH = 1024


class ArtifactRefusedError(ValueError):
    """An artifact set a target will not use; the message is the one reason it reports."""


def safe_relative(path: str) -> str:
    """`path` if it is relative, `/`-separated and stays inside its root; else ValueError saying why."""
    if not path or len(path) > _MAX_PATH:
        raise ValueError(f"path {path[:80]!r} is empty or longer than {_MAX_PATH} characters")
    if "\\" in path or "\x00" in path:
        raise ValueError(f"path {path[:80]!r} holds a backslash or NUL")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise ValueError(f"path {path!r} is absolute")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"path {path!r} has an empty, '.' or '..' component")
    return path


def inside(root: Path, path: str) -> Path:
    """Where `path` lands under `root`, refusing one that a symlink on the way would lead outside."""
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base / safe_relative(path)))
    if target != base and base not in target.parents:
        raise ValueError(f"path {path!r} leads outside {root} (through a symbolic link)")
    return target


class ArtifactFile(BaseModel):
    """One file of a compile cache."""

    root: str = Field(pattern=ROOT_NAME)
    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return safe_relative(value)


class ArtifactManifest(BaseModel):
    """What a source serves: its files and the key they were compiled under."""

    key: dict[str, str]
    files: list[ArtifactFile] = Field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_proto(self) -> worker_pb2.ArtifactManifest:
        return worker_pb2.ArtifactManifest(
            key=self.key,
            files=[worker_pb2.ArtifactFile(root=f.root, path=f.path, size=f.size, sha256=f.sha256) for f in self.files],
        )

    @classmethod
    def from_proto(cls, msg: worker_pb2.ArtifactManifest) -> ArtifactManifest:
        """The manifest, or ArtifactRefusedError naming the first entry that breaks the rules."""
        try:
            files = [{"root": f.root, "path": f.path, "size": f.size, "sha256": f.sha256} for f in msg.files]
            return cls.model_validate({"key": dict(msg.key), "files": files})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ArtifactRefusedError(f"unsafe or malformed manifest entry {where}: {first['msg']}") from None

    def check(self, key: dict[str, str], roots: dict[str, Path], max_bytes: int, max_files: int) -> None:
        """ArtifactRefusedError with the reason when a target with this key and these roots must not
        use the set: another key, a cache it does not have, duplicates, or more than it accepts."""
        mismatch = key_mismatch(key, self.key)
        if mismatch:
            raise ArtifactRefusedError(f"compiled under another key ({mismatch})")
        if len(self.files) > max_files:
            raise ArtifactRefusedError(f"{len(self.files)} files, more than MX_ARTIFACT_MAX_FILES={max_files}")
        if self.total_bytes > max_bytes:
            raise ArtifactRefusedError(
                f"{size(self.total_bytes)}, more than MX_ARTIFACT_MAX_BYTES={max_bytes} ({size(max_bytes)})"
            )
        seen: set[tuple[str, str]] = set()
        for f in self.files:
            if f.root not in roots:
                raise ArtifactRefusedError(f"{f.path} belongs to cache {f.root!r}, which this worker does not have")
            if (f.root, f.path) in seen:
                raise ArtifactRefusedError(f"{f.root}:{f.path} is listed twice")
            seen.add((f.root, f.path))
            try:
                inside(roots[f.root], f.path)
            except ValueError as exc:
                raise ArtifactRefusedError(str(exc)) from None


def key_mismatch(ours: dict[str, str], theirs: dict[str, str]) -> str:
    """The entries in which two keys differ ('' when equal), e.g. `dtype: 'float32' here, 'bfloat16' there`."""
    differing = [
        f"{name}: {ours.get(name, '<unset>')!r} here, {theirs.get(name, '<unset>')!r} there"
        for name in sorted(set(ours) | set(theirs))
        if ours.get(name) != theirs.get(name)
    ]
    return "; ".join(differing)


def is_entry_point(path: str) -> bool:
    """Files an engine opens first to decide whether its cache holds a compiled model: placed last, so a
    cache that is only partly in place never looks complete."""
    return re.search(r"(^|/)(model|vllm_compile_cache\.py|cache_key_factors\.json)$", path) is not None
