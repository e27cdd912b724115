"""A real source worker in its own process, for transfer tests.

python -m tests.helpers.source_proc --ready-file F (--model-dir DIR | --special) [--corrupt] [--model-name N]
Loads the tensors, serves them with SourceWorker (NIXL + WorkerService on 127.0.0.1), writes its
endpoint to F when Ready, and runs until SIGTERM. `--corrupt` flips one byte of every tensor *after*
the manifest checksums are taken (a source whose memory went bad). `--special` serves adopted
tensors of awkward kinds: zero-byte, non-contiguous views, bf16 and fp8.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import torch

from modelexpress.config.worker import WorkerSettings
from modelexpress.files import write_text_atomic
from modelexpress.metrics import serve_metrics
from modelexpress.p2p.checksum import checksum, choose_algorithm
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorLayout, adopt_tensors, allocate_pool
from modelexpress.p2p.safetensors_dir import load_into, scan
from modelexpress.p2p.source import SourceWorker
from modelexpress.registry import EmbeddedRegistry


def special_tensors() -> dict[str, torch.Tensor]:
    """Awkward tensors, deterministic so a test can rebuild the expected values."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(64, 48, generator=gen)
    return {
        "empty.weight": torch.empty(0, 16, dtype=torch.bfloat16),
        "transposed.weight": base.t(),  # a non-contiguous view
        "strided.weight": base[::2, 1::3],  # another non-contiguous view
        "bf16.weight": torch.randn(33, 17, generator=gen).to(torch.bfloat16),
        "fp8.weight": torch.randn(128, 64, generator=gen).to(torch.float8_e4m3fn),
        "fp8.weight_scale": torch.rand(1, generator=gen),
        "int.buffer": torch.arange(11, dtype=torch.int64),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--special", action="store_true")
    parser.add_argument("--corrupt", action="store_true")
    parser.add_argument("--model-name", default="test/model")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--registry")
    args = parser.parse_args()

    layout: TensorLayout
    if args.special:
        layout = adopt_tensors(special_tensors())
    else:
        stored = scan(args.model_dir)
        layout = allocate_pool([s.spec for s in stored])
        load_into(layout.tensors, stored)
    identity = WorkerIdentity(model_name=args.model_name, rank=args.rank)
    settings = WorkerSettings(worker_host="127.0.0.1", worker_grpc_port=0)
    checksums = None
    if args.corrupt:
        # Checksums of the good bytes, then the damage, before anyone can READ: no race with targets.
        algorithm = choose_algorithm(layout, settings.checksum_algorithm)
        checksums = {name: checksum(tensor, algorithm) for name, tensor in layout.tensors.items()}
        for tensor in layout.tensors.values():
            if tensor.numel():
                raw = tensor.view(-1).view(torch.uint8) if tensor.is_contiguous() else None
                if raw is not None:
                    raw[0] ^= 0xFF
    serve_metrics(settings.metrics_port, "127.0.0.1")
    source = SourceWorker(identity, layout, settings, checksums=checksums)
    registry = EmbeddedRegistry(args.registry) if args.registry else None
    source.start(registry)
    write_text_atomic(args.ready_file, source.endpoint)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    source.stop()


if __name__ == "__main__":
    main()
