"""Reading a safetensors model directory straight into pooled memory (no intermediate copies).

The header of each file gives names, dtypes, shapes and byte ranges; the bytes are read from the file
directly into the destination tensor views. Also the disk fallback of a pull: it fills exactly the
tensors named, in place.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from modelexpress.p2p.checksum import tensor_bytes
from modelexpress.p2p.memory import TensorSpec

_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64",
}
_MAX_HEADER = 100 << 20


class SafetensorsError(ValueError):
    """A file that is not valid safetensors."""


@dataclass(frozen=True)
class StoredTensor:
    spec: TensorSpec
    path: Path
    start: int  # absolute byte offset in the file
    length: int


def read_header(path: Path) -> list[StoredTensor]:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: too short to be safetensors")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise SafetensorsError(f"{path}: header of {size} bytes is implausible")
        try:
            header = json.loads(f.read(size))
        except json.JSONDecodeError as exc:
            raise SafetensorsError(f"{path}: header is not JSON: {exc}") from exc
    base = 8 + size
    stored = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        spec = TensorSpec(name, _DTYPES[info["dtype"]], tuple(info["shape"]))
        if end - begin != spec.nbytes:
            raise SafetensorsError(f"{path}: tensor {name} spans {end - begin} bytes, its shape needs {spec.nbytes}")
        stored.append(StoredTensor(spec, path, base + begin, end - begin))
    return sorted(stored, key=lambda s: s.start)


def model_files(directory: Path) -> list[Path]:
    if Path(directory).is_file():
        raise SafetensorsError(f"{directory} is a file: give the directory that holds the model's *.safetensors")
    if not Path(directory).is_dir():
        raise SafetensorsError(f"{directory}: no such directory")
    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise SafetensorsError(f"no *.safetensors files in {directory}")
    return files


def scan(directory: Path) -> list[StoredTensor]:
    """Every tensor of the directory's safetensors files, in file then offset order."""
    stored = [t for path in model_files(directory) for t in read_header(path)]
    names = [t.spec.name for t in stored]
    if len(names) != len(set(names)):
        duplicated = sorted({n for n in names if names.count(n) > 1})[:5]
        raise SafetensorsError(f"{directory}: tensors appear in several files: {duplicated}")
    return stored


def load_into(tensors: dict[str, torch.Tensor], stored: list[StoredTensor], names: list[str] | None = None) -> int:
    """Read the bytes of the named (default: all) stored tensors into `tensors` in place; returns bytes read."""
    wanted = set(names) if names is not None else None
    total = 0
    by_file: dict[Path, list[StoredTensor]] = {}
    for item in stored:
        if wanted is None or item.spec.name in wanted:
            by_file.setdefault(item.path, []).append(item)
    for path, items in by_file.items():
        with path.open("rb", buffering=0) as f:
            for item in items:
                dest = tensors[item.spec.name]
                if item.length == 0:
                    continue
                if dest.device.type == "cpu":
                    view = tensor_bytes(dest).numpy().data
                    f.seek(item.start)
                    if f.readinto(view) != item.length:
                        raise SafetensorsError(f"{path}: truncated while reading {item.spec.name}")
                else:
                    f.seek(item.start)
                    staged = bytearray(f.read(item.length))
                    tensor_bytes(dest).copy_(torch.frombuffer(staged, dtype=torch.uint8))
                total += item.length
    return total


def disk_fallback(directory: Path) -> Callable[[dict[str, torch.Tensor], list[str]], None]:
    """A pull fallback that loads the named tensors from a safetensors directory."""
    stored = scan(directory)

    def fill(tensors: dict[str, torch.Tensor], names: list[str]) -> None:
        load_into(tensors, stored, names)

    return fill
