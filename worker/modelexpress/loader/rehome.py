"""Moving a module's tensors into one pooled allocation, so NIXL registers one region, not thousands.

Every parameter and buffer (FP8 scales included) gets a view into a pool allocated on its device;
the module keeps using the same Parameter objects (only `.data` changes), so optimizer-free inference
engines, tied weights and hooks see no difference.
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


def rehome(module: nn.Module, device: torch.device | str | None = None, copy: bool = True) -> TensorLayout:
    """Put the module's tensors into one pool on `device` (default: where they are) and return its layout.

    With `copy` the values move along (a model loaded from disk); without, the pool starts
    uninitialised (a target about to receive every byte).
    """
    tensors = module_tensors(module)
    if not tensors:
        raise ValueError("the module has no parameters or buffers to load")
    devices = {t.device for t, _ in tensors.values()}
    target = torch.device(device) if device is not None else next(iter(devices))
    if device is None and len(devices) > 1:
        raise ValueError(f"the module's tensors are on several devices {sorted(map(str, devices))}; pass device=")
    specs = [TensorSpec.of(name, t, is_param) for name, (t, is_param) in tensors.items()]
    layout = allocate_pool(specs, target)
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
    return layout


def still_pooled(module: nn.Module, layout: TensorLayout) -> bool:
    """Whether every tensor of the module still views the pool (a loader may have replaced one)."""
    buffers = layout.buffers()
    ranges = [(b.data_ptr(), b.data_ptr() + b.numel()) for b in buffers]
    for tensor, _ in module_tensors(module).values():
        ptr = tensor.data_ptr()
        if tensor.numel() and not any(lo <= ptr < hi for lo, hi in ranges):
            return False
    return True
