"""Write a small safetensors model for demos and tests: a few transformer-like layers, several dtypes.

Usage: python hack/make_tiny_model.py OUT_DIR [--layers 4] [--hidden 256] [--files 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file


def tiny_model(layers: int = 4, hidden: int = 256, vocab: int = 1024, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(vocab, hidden, generator=gen).to(torch.bfloat16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.qkv_proj.weight"] = torch.randn(3 * hidden, hidden, generator=gen).to(torch.bfloat16)
        tensors[p + "self_attn.o_proj.weight"] = torch.randn(hidden, hidden, generator=gen).to(torch.bfloat16)
        tensors[p + "mlp.gate_up_proj.weight"] = torch.randn(8 * hidden, hidden, generator=gen).to(torch.float8_e4m3fn)
        tensors[p + "mlp.gate_up_proj.weight_scale"] = torch.rand(1, generator=gen)
        tensors[p + "mlp.down_proj.weight"] = torch.randn(hidden, 4 * hidden, generator=gen).to(torch.bfloat16)
        tensors[p + "input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float32)
    tensors["model.norm.weight"] = torch.ones(hidden, dtype=torch.float32)
    tensors["lm_head.weight"] = torch.randn(vocab, hidden, generator=gen).to(torch.bfloat16)
    return tensors


def write(out: Path, tensors: dict[str, torch.Tensor], files: int = 2) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    per_file = -(-len(names) // files)
    paths = []
    for i in range(files):
        part = {n: tensors[n].contiguous() for n in names[i * per_file : (i + 1) * per_file]}
        if part:
            path = out / f"model-{i + 1:05d}-of-{files:05d}.safetensors"
            save_file(part, str(path))
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--files", type=int, default=2)
    args = parser.parse_args()
    paths = write(args.out, tiny_model(args.layers, args.hidden), args.files)
    size = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} file(s), {size / 2**20:.1f} MiB, to {args.out}")


if __name__ == "__main__":
    main()
