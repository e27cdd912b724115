"""Mapping between torch dtypes, their names in manifests, and the wire enum."""

from __future__ import annotations

import torch

from modelexpress._proto.worker.v1 import worker_pb2

_PAIRS: list[tuple[str, int]] = [
    ("float32", worker_pb2.DTYPE_FLOAT32),
    ("float16", worker_pb2.DTYPE_FLOAT16),
    ("bfloat16", worker_pb2.DTYPE_BFLOAT16),
    ("float64", worker_pb2.DTYPE_FLOAT64),
    ("int8", worker_pb2.DTYPE_INT8),
    ("uint8", worker_pb2.DTYPE_UINT8),
    ("int16", worker_pb2.DTYPE_INT16),
    ("int32", worker_pb2.DTYPE_INT32),
    ("int64", worker_pb2.DTYPE_INT64),
    ("bool", worker_pb2.DTYPE_BOOL),
    ("float8_e4m3fn", worker_pb2.DTYPE_FLOAT8_E4M3FN),
    ("float8_e5m2", worker_pb2.DTYPE_FLOAT8_E5M2),
    ("float8_e8m0fnu", worker_pb2.DTYPE_FLOAT8_E8M0FNU),
    ("float4_e2m1fn_x2", worker_pb2.DTYPE_FLOAT4_E2M1FN_X2),
    ("uint16", worker_pb2.DTYPE_UINT16),
    ("uint32", worker_pb2.DTYPE_UINT32),
    ("uint64", worker_pb2.DTYPE_UINT64),
    ("complex64", worker_pb2.DTYPE_COMPLEX64),
]
NAME_TO_WIRE = dict(_PAIRS)
WIRE_TO_NAME = {wire: name for name, wire in _PAIRS}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in NAME_TO_WIRE:
        raise ValueError(f"dtype {dtype} cannot be carried in a manifest")
    return name


def torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"this torch build has no dtype {name!r}")
    return dtype
