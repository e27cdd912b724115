"""Moving a module's tensors into one pooled allocation, so NIXL registers one region, not thousands.

Every parameter and buffer (FP8 scales included) gets a view into a pool allocated on its device;
the module keeps using the same Parameter objects (only `.data` changes), so optimizer-free inference
engines, tied weights and hooks see no difference.

A target plans its pool apart from the module (`plan_pool`), fills it, and only `attach`es it once
every byte is verified: until then the module is exactly as the engine built it, so a failed pull
leaves nothing behind that a disk load would reuse (engines share some modules across builds, such
as vLLM's rotary-embedding tables).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from modelexpress.p2p.memory import TensorLayout, TensorSpec, allocate_pool


def module_tensors(module: nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (tensor, is_parameter) for each distinct parameter and buffer (tied ones once)."""
    seen: dict[int, str] = {}
    found: dict[str, tuple[torch.Tensor, bool]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) not in seen:
            seen[id(param)] = name
            found[name] = (param, True)
    for name, buffer in module.named_buffers(remove_duplicate=False):
        if buffer is not None and id(buffer) not in seen:
            seen[id(buffer)] = name
            found[name] = (buffer, False)
    return found


def _target_device(module: nn.Module, device: torch.device | str | None) -> torch.device:
    devices = {t.device for t, _ in module_tensors(module).values()}
    if not devices:
        raise ValueError("the module has no parameters or buffers to load")
    if device is None and len(devices) > 1:
        raise ValueError(f"the module's tensors are on several devices {sorted(map(str, devices))}; pass device=")
    return torch.device(device) if device is not None else next(iter(devices))


def plan_pool(module: nn.Module, device: torch.device | str | None = None) -> TensorLayout:
    """A pool with room for every tensor of the module, on `device` (default: where they are).

    The module is not touched: its tensors keep their own storage and values until `attach`.
    """
    target = _target_device(module, device)
    specs = [TensorSpec.of(name, t, is_param) for name, (t, is_param) in module_tensors(module).items()]
    return allocate_pool(specs, target)


def attach(module: nn.Module, layout: TensorLayout, copy: bool) -> None:
    """Point every parameter and buffer of the module at its view in `layout`.

    With `copy` the module's values move along (a model loaded from disk); without, the views keep
    what the pool holds (a target that received every byte).
    """
    tensors = module_tensors(module)
    missing = sorted(set(tensors) - set(layout.tensors))
    if missing:
        raise ValueError(f"the pool has no room for {len(missing)} tensor(s) of the module, e.g. {missing[0]}")
    buffer_owners: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    for name, buffer in module.named_buffers(remove_duplicate=False):
        owner_name, _, attr = name.rpartition(".")
        buffer_owners[id(buffer)].append((module.get_submodule(owner_name) if owner_name else module, attr))
    with torch.no_grad():
        for name, (tensor, is_param) in tensors.items():
            view = layout.tensors[name]
            if copy:
                view.copy_(tensor)
            if is_param:
                tensor.data = view
            else:
                for owner, attr in buffer_owners[id(tensor)]:
                    owner._buffers[attr] = view


def rehome(module: nn.Module, device: torch.device | str | None = None, copy: bool = True) -> TensorLayout:
    """Put the module's tensors into one pool on `device` (default: where they are) and return its layout.

    With `copy` the values move along (a model loaded from disk); without, the pool starts
    uninitialised.
    """
    layout = plan_pool(module, device)
    attach(module, layout, copy=copy)
    return layout
