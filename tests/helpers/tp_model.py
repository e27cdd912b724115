"""A small real torch model split tensor-parallel like an inference engine splits it, for loader tests.

Each rank holds a column slice of `up` (and its bias), the matching row slice of `down`, a replicated
LayerNorm, and an FP8 weight with its scale buffer (carried as raw bytes, dequantized in forward).
`load_from_disk` reads the full checkpoint and copies this rank's shard in, as an engine's weight
loader does; `forward` returns this rank's partial output (the engine would all-reduce them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HIDDEN, INTER, LAYERS = 64, 256, 3


class Layer(nn.Module):
    def __init__(self, rank: int, world: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.up = nn.Linear(HIDDEN, INTER // world)
        self.down = nn.Linear(INTER // world, HIDDEN, bias=False)
        self.gate = nn.Parameter(torch.empty(INTER // world, HIDDEN, dtype=torch.float8_e4m3fn), requires_grad=False)
        self.register_buffer("gate_scale", torch.empty(1))
        self.rank, self.world = rank, world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        gate = h @ (self.gate.to(torch.float32) * self.gate_scale).t()
        up = self.packed_up(h) if hasattr(self, "packed_up") else self.up(h)
        return self.down(torch.nn.functional.gelu(up) * torch.sigmoid(gate))


class ShardedModel(nn.Module):
    def __init__(self, rank: int, world: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(rank, world) for _ in range(LAYERS))
        self.rank, self.world = rank, world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([layer(x) for layer in self.layers])


def write_checkpoint(directory: Path, seed: int = 0) -> None:
    """The full (unsharded) weights, as a model repository ships them."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for i in range(LAYERS):
        p = f"layers.{i}."
        tensors[p + "norm.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=gen)
        tensors[p + "norm.bias"] = 0.1 * torch.randn(HIDDEN, generator=gen)
        tensors[p + "up.weight"] = torch.randn(INTER, HIDDEN, generator=gen) / 8
        tensors[p + "up.bias"] = torch.randn(INTER, generator=gen) / 8
        tensors[p + "down.weight"] = torch.randn(HIDDEN, INTER, generator=gen) / 16
        tensors[p + "gate"] = (torch.randn(INTER, HIDDEN, generator=gen) * 4).to(torch.float8_e4m3fn)
        tensors[p + "gate_scale"] = torch.tensor([0.05 + 0.01 * i])
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))


def load_from_disk(model: ShardedModel, directory: Path) -> None:
    """Copy this rank's shard of every tensor from the checkpoint into the model's own tensors."""
    full = load_file(str(directory / "model.safetensors"))
    r, w = model.rank, model.world
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}."
        k = INTER // w
        layer.norm.weight.copy_(full[p + "norm.weight"])
        layer.norm.bias.copy_(full[p + "norm.bias"])
        layer.up.weight.copy_(full[p + "up.weight"][r * k : (r + 1) * k])
        layer.up.bias.copy_(full[p + "up.bias"][r * k : (r + 1) * k])
        layer.down.weight.copy_(full[p + "down.weight"][:, r * k : (r + 1) * k])
        layer.gate.copy_(full[p + "gate"][r * k : (r + 1) * k])
        layer.gate_scale.copy_(full[p + "gate_scale"])


def post_process(model: ShardedModel, how: str) -> None:
    """What engines do after loading. `pack`: like vLLM's CPU backend, each `up` weight moves into a
    kernel-specific copy held only by a closure and the parameter is emptied, so the forward pass reads
    a tensor that is no parameter or buffer. `inplace`: a loaded tensor is rewritten where it lies."""
    for layer in model.layers:
        if how == "pack":
            packed, bias = layer.up.weight.detach().t().contiguous(), layer.up.bias
            layer.packed_up = lambda h, w=packed, b=bias: h @ w + b
            layer.up.weight = nn.Parameter(torch.empty(0), requires_grad=False)
        elif how == "inplace":
            layer.gate_scale.mul_(2)
        elif how != "none":
            raise ValueError(f"unknown post-processing {how!r}")


def probe_input() -> torch.Tensor:
    return torch.randn(8, HIDDEN, generator=torch.Generator().manual_seed(1234))
