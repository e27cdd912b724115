"""Compiled artifacts of a vLLM rank: the key they are compiled under, the caches that hold them, and
the moment vLLM has finished writing them. The transfer itself is `modelexpress.artifacts`.

What travels: vLLM's compile cache for the model (`VLLM_CACHE_ROOT/torch_compile_cache/...`: the
AOT-compiled function and, since vLLM points Inductor there, Inductor's FX-graph and kernel caches
with their Triton kernels), Inductor's own cache when vLLM leaves it elsewhere, and Triton's cache
(`TRITON_CACHE_DIR`) for vLLM's own Triton kernels. The key is the weights' identity plus what
vLLM's cache key is made of (its config hash, its compile-relevant environment, the vLLM and torch
versions), computed on both sides at the same point, in `load_model`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from modelexpress.artifacts import ArtifactStore, FetchResult, collect, fetch_artifacts
from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.service import WorkerServer

log = logging.getLogger("modelexpress.vllm")
_WARM_UP = "compile_or_warm_up_model"
_after_warm_up: list[Callable[[], None]] = []
_lock = threading.Lock()


def compile_key(vllm_config: Any, identity: WorkerIdentity) -> dict[str, str] | None:
    """The key of what this rank compiles (None when vLLM compiles nothing: eager mode, no compile cache)."""
    from vllm import envs
    from vllm.config import CompilationMode
    from vllm.config.utils import hash_factors

    if vllm_config.compilation_config.mode == CompilationMode.NONE or envs.VLLM_DISABLE_COMPILE_CACHE:
        return None
    return {
        **_identity_fields(identity),
        "torch": torch.__version__,
        "vllm_config_hash": vllm_config.compute_hash(),
        "vllm_compile_env_hash": hash_factors(envs.compile_factors()),
        "vllm_aot_compile": str(envs.VLLM_USE_AOT_COMPILE),
    }


def _identity_fields(identity: WorkerIdentity) -> dict[str, str]:
    """What of the rank's identity decides what it compiles (not the weights' version: kernels do not
    depend on the values of the weights)."""
    return {
        "model": identity.model_name,
        "revision": identity.revision,
        "engine": identity.engine,
        "vllm": identity.engine_version or "",
        "dtype": identity.dtype,
        "quantization": identity.quantization or "",
        "tensor_parallel_size": str(identity.tensor_parallel_size),
        "pipeline_parallel_size": str(identity.pipeline_parallel_size),
        "expert_parallel_size": str(identity.expert_parallel_size),
        "gpu_architecture": identity.gpu_architecture or "",
        "rank": str(identity.rank),
    }


def cache_roots() -> dict[str, Path]:
    """Where this process keeps each cache, by the name a manifest uses for it."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from vllm import envs

    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir()
    triton = os.environ.get("TRITON_CACHE_DIR") or str(Path.home() / ".triton" / "cache")
    return {"vllm": Path(envs.VLLM_CACHE_ROOT), "inductor": Path(inductor), "triton": Path(triton)}


def compiled_trees(vllm_config: Any) -> list[tuple[str, Path, str]]:
    """The cache trees this rank's compilation wrote, as (root name, root, subdirectory)."""
    roots = cache_roots()
    vllm_root = roots["vllm"].resolve()
    compile_root = vllm_root / "torch_compile_cache"
    trees: list[tuple[str, Path, str]] = []
    compilation = vllm_config.compilation_config
    for written in (compilation.local_cache_dir, compilation.cache_dir):
        if not written:
            continue
        try:
            parts = Path(written).resolve().relative_to(compile_root).parts
        except ValueError:
            continue
        top = parts[:2] if parts and parts[0] == "torch_aot_compile" else parts[:1]
        if top:
            tree = ("vllm", roots["vllm"], str(Path("torch_compile_cache", *top)))
            if tree not in trees:
                trees.append(tree)
    for name in ("inductor", "triton"):
        root = roots[name].resolve()
        if root.is_dir() and vllm_root not in root.parents:  # else it is inside the vLLM tree already
            trees.append((name, roots[name], ""))
    return trees


def other_ranks(vllm_config: Any) -> Callable[[str], bool]:
    """Whether a path belongs to another rank's part of a shared cache (`rank_<r>_<dp>/`): ranks on one
    node share one AOT directory, and each serves only its own part and the shared kernels."""
    parallel = vllm_config.parallel_config
    own = f"rank_{parallel.rank}_{parallel.data_parallel_index}"

    def skip(path: str) -> bool:
        return any(part != own for part in re.findall(r"(?:^|/)(rank_\d+_\d+)(?=/)", path))

    return skip


def serve_when_compiled(server: WorkerServer, key: dict[str, str], vllm_config: Any) -> None:
    """Serve this rank's artifacts once vLLM has compiled and warmed up; until then targets are told so."""
    server.artifacts_pending = "vLLM is still compiling; its artifacts are served once it has finished"

    def publish() -> None:
        def work() -> None:
            try:
                manifest = collect(key, compiled_trees(vllm_config), skip=other_ranks(vllm_config))
            except OSError as exc:
                server.artifacts_pending = f"listing the compiled artifacts failed: {exc}"
                log.warning("compiled artifacts are not served: %s", server.artifacts_pending)
                return
            server.publish_artifacts(ArtifactStore(manifest, cache_roots()))

        threading.Thread(target=work, name="mx-artifacts", daemon=True).start()  # digests take a while

    if not _follow_warm_up(publish):
        server.artifacts_pending = f"this vLLM has no Worker.{_WARM_UP} to tell when compilation is done"
        log.warning("compiled artifacts are not served: %s", server.artifacts_pending)


def _follow_warm_up(callback: Callable[[], None]) -> bool:
    """Call `callback` once vLLM's worker has returned from compiling and warming up (the engine core
    calls it once per worker after the KV cache is allocated); False when that cannot be followed."""
    worker_module = sys.modules.get("vllm.v1.worker.gpu_worker")
    base = getattr(worker_module, "Worker", None)
    if base is None:
        return False
    with _lock:
        _after_warm_up.append(callback)
        for cls in [base, *_subclasses(base)]:
            original = cls.__dict__.get(_WARM_UP)
            if original is not None and not getattr(original, "_modelexpress", False):
                setattr(cls, _WARM_UP, _wrapped(original))
    return True


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _wrapped(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def compile_or_warm_up_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        with _lock:
            callbacks = list(_after_warm_up)
            _after_warm_up.clear()
        for callback in callbacks:
            callback()
        return result

    compile_or_warm_up_model._modelexpress = True  # type: ignore[attr-defined]
    return compile_or_warm_up_model


def fetch_in_background(
    endpoints: Callable[[], list[str]], key: dict[str, str], settings: WorkerSettings
) -> Future[FetchResult]:
    """Fetch the artifacts of this key from the first source that serves them, while vLLM builds the
    model and receives its weights; the loader waits for it before vLLM's first forward pass."""
    future: Future[FetchResult] = Future()

    def work() -> None:
        try:
            limits = settings.artifact_max_bytes, settings.artifact_max_files
            future.set_result(fetch_artifacts(endpoints(), key, cache_roots(), *limits, settings.connect_timeout_secs))
        except BaseException as exc:  # handed to the loader, which compiles instead
            future.set_exception(exc)

    threading.Thread(target=work, name="mx-artifacts-fetch", daemon=True).start()
    return future
