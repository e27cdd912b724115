"""What a version of a model's weights is, and what changed between two of them.

A version is the whole set of a model's tensors in checkpoint form (the names and shapes of its
safetensors files, before an engine fuses or packs them), published under the model's name and a
version string (an RL training step). Checkpoint tensors are the same for every rank of every
replica, so one identity (rank 0, TP 1, engine `checkpoint`) serves them all, and workers of two
versions never exchange a byte: the version is part of the identity that sources must match.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from modelexpress.api.modelmetadata import MODEL_NAME_PATTERN
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest

CHECKPOINT_ENGINE = "checkpoint"


class UpdateError(RuntimeError):
    """A version could not be obtained or installed; the replica still serves the one it had."""


class LayoutMismatchError(UpdateError):
    """The published tensors are not the model's: a name, shape or dtype differs."""


def identity_name(model: str) -> str:
    """The model name of a version's identity: `model` itself when it is a valid model name (a Hub id),
    else (a path, as vLLM's `--model` often is) `local/<last part>-<hash of the whole string>`, the same
    on every machine that names the model with the same string."""
    if re.match(MODEL_NAME_PATTERN, model) and len(model) <= 256:
        return model
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", model.rstrip("/").rsplit("/", 1)[-1]).strip("-._")[:40] or "model"
    return f"local/{tail}-{hashlib.sha256(model.encode()).hexdigest()[:10]}"


def version_identity(model_name: str, version: str) -> WorkerIdentity:
    """The identity under which `version` of `model_name`'s checkpoint tensors is published."""
    return WorkerIdentity(model_name=identity_name(model_name), engine=CHECKPOINT_ENGINE, weights_version=version)


Layout = Mapping[str, tuple[tuple[int, ...], str]]
"""Tensor name -> (shape, dtype)."""


def layout_of(manifest: Manifest) -> dict[str, tuple[tuple[int, ...], str]]:
    """The names, shapes and dtypes a manifest serves."""
    return {t.name: (tuple(t.shape), t.dtype) for t in manifest.tensors}


def layout_differences(held: Layout, offered: Layout, limit: int = 5, dtypes: bool = True) -> list[str]:
    """How `offered` differs from `held` in names, shapes and (with `dtypes`) dtypes; empty when they match."""
    problems = [f"{name}: missing from the new version" for name in held if name not in offered]
    problems += [f"{name}: not in the model" for name in offered if name not in held]
    for name, (shape, dtype) in held.items():
        if name not in offered:
            continue
        their_shape, their_dtype = offered[name]
        if dtypes and (their_shape, their_dtype) != (shape, dtype):
            problems.append(f"{name}: {their_shape} {their_dtype}, the model has {shape} {dtype}")
        elif not dtypes and their_shape != shape:
            problems.append(f"{name}: shape {their_shape}, the model has {shape}")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems


def changed_tensors(held: Manifest | None, offered: Manifest) -> list[str]:
    """Names of the tensors whose content differs between the two versions, in the offered order.

    Every tensor when nothing is held, or when the two were checked with different algorithms (their
    digests cannot be compared)."""
    if held is None or held.checksum_algorithm != offered.checksum_algorithm:
        return [t.name for t in offered.tensors]
    before = held.checksum_of
    return [name for name, digest in offered.checksum_of.items() if before.get(name) != digest]
