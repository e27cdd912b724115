"""A trainer that sends each step's weights to vLLM replicas through the `modelexpress` backend (docs/rl.md).

On one machine:

    python examples/rl_trainer.py --write-tiny /tmp/tiny-llama          # a random 4-layer Llama
    VLLM_SERVER_DEV_MODE=1 MX_WORKER_HOST=127.0.0.1 python -m vllm.entrypoints.openai.api_server \\
        --model /tmp/tiny-llama --skip-tokenizer-init --dtype float32 --enforce-eager --port 8000 \\
        --weight-transfer-config '{"backend": "modelexpress"}' &
    MX_WORKER_HOST=127.0.0.1 python examples/rl_trainer.py --model /tmp/tiny-llama \\
        --replica http://127.0.0.1:8000 --steps 3

Each step perturbs the weights (where a real trainer would run an optimizer step), sends them as the
next version, and asks the replicas what they generate now.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

import torch


def write_tiny(directory: Path) -> None:
    """A random-weight Llama small enough for a CPU (vLLM's CPU attention wants head_dim 64 or more)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=64, vocab_size=512, max_position_embeddings=256,
                         tie_word_embeddings=False, torch_dtype="float32")  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    print(f"wrote {directory}")


def generate(url: str, model: str) -> list[int]:
    body = {"model": model, "prompt": [5, 17, 42, 99], "max_tokens": 8, "temperature": 0, "return_token_ids": True}
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        tokens: list[int] = json.loads(response.read())["choices"][0]["token_ids"]
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-tiny", type=Path, help="write a random tiny Llama to this directory and stop")
    parser.add_argument("--model", type=Path, help="the checkpoint the replicas serve (their --model)")
    parser.add_argument("--replica", action="append", default=[], help="a replica's URL (repeat for several)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.write_tiny:
        write_tiny(args.write_tiny)
        return
    if not args.model or not args.replica:
        parser.error("--model and at least one --replica are needed (or --write-tiny DIR)")

    from transformers import LlamaForCausalLM
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from modelexpress_rl import FanOutClient, ModelExpressTrainerInitInfo

    policy = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    engine = WeightTransferTrainerFactory.trainer_init(
        ModelExpressTrainerInitInfo(model_name=str(args.model)),
        client=FanOutClient([HTTPVLLMWeightSyncClient(url) for url in args.replica]),
        source=ModuleSource(policy),
    )
    print(f"step 0 (the checkpoint): {generate(args.replica[0], str(args.model))}")
    try:
        for step in range(1, args.steps + 1):
            with torch.no_grad():  # stands in for an optimizer step
                for param in policy.parameters():
                    param.add_(torch.randn_like(param) * 0.02)
            started = time.perf_counter()
            version = engine.send_weights(version=step)
            took = time.perf_counter() - started
            now = generate(args.replica[0], str(args.model))
            print(f"step {step}: version {version} sent in {took:.2f}s; replica 1 now says {now}")
    finally:
        engine.shutdown()


if __name__ == "__main__":
    main()
