"""The name and revision a replica publishes for its model: what identifies the weights, never where
they happen to be mounted.

- `MX_MODEL_NAME` (and `MX_MODEL_REVISION`) name the model explicitly; they win over everything.
- A Hugging Face snapshot (`.../models--org--name/snapshots/<commit>`, what a ModelCache PVC holds and
  what vLLM passes with `HF_HUB_OFFLINE=1`) is `org/name` at that commit, wherever it is mounted.
- Any other directory is `local/<model_type>` at `content-<digest>`: a digest of its config, and of
  each weight file's name, size, header and 64 blocks sampled across it. A weight file linked into
  a hub cache's `blobs/` contributes the blob's content hash instead. Two mounts of the same PVC
  match; two different checkpoints of one architecture do not.
- A hub id is pinned to a commit from the local hub cache, else from the hub. A revision that cannot
  be pinned (offline, not cached) gets no name: such a replica loads from disk and serves no one,
  since nothing proves two replicas hold the same commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from modelexpress.api.modelmetadata import MODEL_NAME_PATTERN

_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_SAMPLES, _SAMPLE_BYTES = 64, 4096


class ModelNameError(ValueError):
    """The model cannot be named; the message says which input and what is accepted."""


@dataclass(frozen=True)
class ModelName:
    name: str
    revision: str
    how: str
    """How the name was found, for the log."""


def _validated(name: str, revision: str, what: str) -> ModelName:
    if not re.match(MODEL_NAME_PATTERN, name) or len(name) > 256:
        raise ModelNameError(f"{what}: {name!r} is not a model name (letters, digits, '._-' and '/' between parts)")
    if not _REVISION.match(revision) or len(revision) > 255:
        raise ModelNameError(f"{what}: revision {revision!r} may only hold letters, digits and '._/-'")
    return ModelName(name, revision, what)


def _digest_file(path: Path, digest: hashlib._Hash) -> None:
    target = path.resolve()
    if target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{40,64}", target.name):
        digest.update(f"blob {target.name}\n".encode())  # the hub cache names blobs by content hash
        return
    size = target.stat().st_size
    digest.update(f"file {path.name} {size}\n".encode())
    with target.open("rb") as handle:
        if path.suffix == ".safetensors" and size >= 8:
            header = int.from_bytes(handle.read(8), "little")
            digest.update(handle.read(min(header, size - 8)))
        step = max(size // _SAMPLES, 1)
        for offset in range(0, size, step)[:_SAMPLES]:
            handle.seek(offset)
            digest.update(handle.read(_SAMPLE_BYTES))


def content_digest(directory: Path) -> str:
    """A digest of the config and weight files of a model directory (see the module docstring)."""
    digest = hashlib.sha256()
    config = directory / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    for index in sorted(directory.glob("*.index.json")):
        digest.update(index.read_bytes())
    if not files:
        raise ModelNameError(f"{directory} holds no weight files (*.safetensors, *.bin, *.pt)")
    for path in files:
        _digest_file(path, digest)
    return digest.hexdigest()[:32]


def _model_type(directory: Path) -> str:
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return "model"
    kind = str(config.get("model_type") or "model").lower()
    return re.sub(r"[^a-z0-9._-]+", "-", kind).strip("-._") or "model"


def _pinned_revision(repo: str, revision: str, hub_cache: Path | None) -> str | None:
    if _COMMIT.match(revision):
        return revision
    if hub_cache is not None:
        ref = hub_cache / ("models--" + repo.replace("/", "--")) / "refs" / revision
        if ref.is_file():
            commit = ref.read_text().strip()
            if _COMMIT.match(commit):
                return commit
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo, revision=revision, timeout=10).sha
    except Exception:
        return None
    return sha if sha and _COMMIT.match(sha) else None


def name_model(
    model: str,
    revision: str | None,
    hub_cache: Path | None = None,
    explicit_name: str | None = None,
    explicit_revision: str | None = None,
) -> ModelName:
    """The name and revision that identify `model` (a path or a hub id); raises `ModelNameError`.
    `explicit_name`/`explicit_revision` are `MX_MODEL_NAME`/`MX_MODEL_REVISION`."""
    if explicit_name and explicit_name.strip():
        chosen = (explicit_revision or "").strip() or revision or "main"
        return _validated(explicit_name.strip(), chosen, "MX_MODEL_NAME")
    path = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) or path.is_dir():
        if not path.is_dir():
            raise ModelNameError(f"model path {model}: no such directory")
        resolved = path.resolve()
        found = _SNAPSHOT.search(str(resolved))
        if found:
            return _validated(f"{found['org']}/{found['name']}", found["commit"], f"hub snapshot {resolved}")
        return _validated(
            f"local/{_model_type(resolved)}", f"content-{content_digest(resolved)}", f"content of {resolved}"
        )
    wanted = revision or "main"
    commit = _pinned_revision(model, wanted, hub_cache)
    if commit is None:
        raise ModelNameError(
            f"revision {wanted!r} of {model} could not be pinned to a commit (not in the hub cache, hub not "
            "reachable); set MX_MODEL_NAME and MX_MODEL_REVISION to name it"
        )
    return _validated(model, commit, f"hub id {model}@{wanted}")
