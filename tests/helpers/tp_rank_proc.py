"""One tensor-parallel rank of an engine using `WeightLoader`, in its own process (a worker pod).

python -m tests.helpers.tp_rank_proc --rank R --world W --model-dir D --registry DB --out F --ready-file F
           [--post-process none|pack|inplace]

Builds the rank's module with random values (so received weights are really received), loads it
through the loader's steps as an engine adapter does (peers first, else disk; post-processing; seal;
publish), runs the probe input, saves {mode, reason, sources, output, state} to --out, writes its
endpoint ("" when not served) to --ready-file and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

import torch

from modelexpress.config.worker import WorkerSettings
from modelexpress.files import write_text_atomic
from modelexpress.loader import WeightLoader
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.registry import EmbeddedRegistry
from tests.helpers.tp_model import ShardedModel, load_from_disk, post_process, probe_input


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--post-process", default="none")
    args = parser.parse_args()

    torch.manual_seed(1000 + args.rank * 7 + int.from_bytes(os.urandom(2), "little"))
    model = ShardedModel(args.rank, args.world)
    for p in model.parameters():
        p.data = torch.rand_like(p, dtype=torch.float32).to(p.dtype)  # garbage until loaded
    identity = WorkerIdentity(
        model_name="test/tp-model", dtype="float32", tensor_parallel_size=args.world, rank=args.rank
    )
    settings = WorkerSettings(worker_host="127.0.0.1", worker_grpc_port=0, status_ttl_secs=600)
    registry = EmbeddedRegistry(args.registry, ttl_seconds=600)
    loader = WeightLoader(identity, settings, registry)
    report = loader.receive(model) if loader.sources() else None
    if report is None:
        started = time.perf_counter()
        with torch.no_grad():
            load_from_disk(model, args.model_dir)
        report = loader.adopt(model, started=started)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the loaded state, before post-processing
    with torch.no_grad():
        post_process(model, args.post_process)
        output = model(probe_input())
    loader.seal()
    loader.publish(report)
    torch.save(
        {
            "mode": report.mode,
            "reason": report.reason,
            "sources": report.sources,
            "bytes": report.bytes,
            "output": output,
            "state": state,
        },
        args.out,
    )
    write_text_atomic(args.ready_file, report.endpoint or "")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    loader.close()
    registry.close()


if __name__ == "__main__":
    main()
