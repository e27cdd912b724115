"""The ModelStreamer path: safetensors streamed with runai-model-streamer from `MX_MODEL_URI`.

`MX_MODEL_URI` is an object-store prefix (`s3://bucket/model`, `gs://...`, `az://...`), an absolute
directory, or a Hugging Face model id resolved in `HF_HUB_CACHE` (the ModelCache PVC in a cluster).
The streamer's own settings pass through from the environment: `RUNAI_STREAMER_CONCURRENCY` (read
threads, default 8 here as in the seeds) and `RUNAI_STREAMER_MEMORY_LIMIT` (CPU staging bytes; 0
reuses one tensor-sized buffer). Object-store credentials come from the usual chains (`AWS_*`,
`AWS_ENDPOINT_URL` for S3-compatible stores, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_*`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from modelexpress.cache.huggingface import repo_folder

REMOTE_SCHEMES = ("s3://", "gs://", "az://")


class ModelUriError(ValueError):
    """`MX_MODEL_URI` names nothing loadable; the message says what was looked for and where."""


def resolve_model_uri(uri: str, hub_cache: str | None = None) -> str:
    """A directory or object-store prefix holding the model's *.safetensors."""
    if not uri:
        raise ModelUriError("MX_MODEL_URI is empty; set it to s3://bucket/model, /path/to/model or org/name")
    if uri.startswith(REMOTE_SCHEMES):
        return uri.rstrip("/")
    if uri.startswith("/"):
        if not Path(uri).is_dir():
            raise ModelUriError(f"MX_MODEL_URI={uri}: no such directory")
        return uri
    if uri.count("/") != 1 or ".." in uri:
        raise ModelUriError(f"MX_MODEL_URI={uri!r} is not a URI, an absolute path or a model id (org/name)")
    cache = Path(hub_cache or os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    folder = repo_folder(cache, uri)
    ref = folder / "refs" / "main"
    snapshots = sorted((folder / "snapshots").glob("*")) if (folder / "snapshots").is_dir() else []
    if ref.exists() and (folder / "snapshots" / ref.read_text().strip()).is_dir():
        return str(folder / "snapshots" / ref.read_text().strip())
    if len(snapshots) == 1:
        return str(snapshots[0])
    raise ModelUriError(
        f"MX_MODEL_URI={uri}: not found in the Hugging Face cache {cache} (looked for {folder}); "
        "download it first (modelexpress cache pull hf://" + uri + ") or point HF_HUB_CACHE at the cache"
    )


def safetensors_files(location: str) -> list[str]:
    """Every *.safetensors directly under the directory or prefix, in name order."""
    from runai_model_streamer import list_safetensors

    files = sorted(list_safetensors(location))
    if not files:
        raise ModelUriError(f"{location} holds no *.safetensors files")
    return files


def stream_tensors(uri: str, device: str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the model, streamed; tensors are the caller's to keep."""
    from runai_model_streamer import SafetensorsStreamer

    os.environ.setdefault("RUNAI_STREAMER_CONCURRENCY", "8")
    files = safetensors_files(resolve_model_uri(uri))
    with SafetensorsStreamer() as streamer:
        streamer.stream_files(files, device=device)
        yield from streamer.get_tensors()
