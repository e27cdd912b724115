"""Our pull against a raw NIXL READ of the same bytes and an in-process copy, on host memory, same run.

Two layouts of the same total: 16 large tensors, and 4096 small ones. For each, a source process
serves the tensors (SourceWorker: NIXL + WorkerService) and the target measures:
- raw NIXL: one READ of the source's whole region with one descriptor, connection already up (best case);
- ours: `pull()` end to end: gRPC status + manifest + agent metadata, matching, chunked READs, xxh3
  verification of every tensor;
- copy: `torch` copying the same bytes inside one process.
Targets (issue 10): ours >= 0.9 of raw NIXL on large tensors; small tensors >= 0.8 of the large rate.

Usage: python bench/p2p_pull.py [--mib 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from multiprocessing.connection import Connection

import torch
from timing import best_of

from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.client import WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PullOptions, pull
from modelexpress.p2p.source import SourceWorker

MIB = 1 << 20


def _specs(layout: str, total: int) -> list[TensorSpec]:
    count = 16 if layout == "large" else 4096
    return [TensorSpec(f"model.layers.{i}.weight", "bfloat16", (total // count // 2,)) for i in range(count)]


def _serve(conn: Connection, layout: str, total: int) -> None:
    pool = allocate_pool(_specs(layout, total))
    gen = torch.Generator().manual_seed(1)
    for tensor in pool.tensors.values():
        tensor.view(torch.int16).copy_(torch.randint(-30000, 30000, tensor.shape, dtype=torch.int16, generator=gen))
    source = SourceWorker(WorkerIdentity(model_name=f"bench/{layout}"), pool, WorkerSettings(worker_host="127.0.0.1"))
    source.start()
    conn.send(source.endpoint)
    conn.recv()
    source.stop()


def measure(layout: str, total: int, reps: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, layout, total))
    proc.start()
    try:
        endpoint = parent.recv()
        identity = WorkerIdentity(model_name=f"bench/{layout}")
        engine = NixlEngine()
        target = allocate_pool(_specs(layout, total))
        engine.register(target)
        client = WorkerClient(endpoint)
        manifest = client.manifest()
        remote = engine.add_remote(client.agent_metadata().metadata)
        src_region, dst_region = manifest.regions[0], target.regions[0]
        length = min(src_region.length, dst_region.length)

        def raw() -> None:
            read = engine.start_read(remote, [(dst_region.address, src_region.address, length)], "DRAM", 0, "DRAM", 0)
            while (state := engine.state(read)) == "PROC":
                pass
            engine.release(read)
            if state != "DONE":
                raise RuntimeError("raw READ failed")

        raw()  # connection wire-up, not timed
        raw_s = best_of(reps, raw)[0]
        client.close()
        options = PullOptions(max_inflight=4)
        ours_s = best_of(reps, lambda: pull(target, identity, [endpoint], engine, options))[0]
        engine.remove_remote(remote)
        engine.deregister_all()
    finally:
        parent.send("stop")
        proc.join(30)
    src = torch.empty(total, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    copy_s = best_of(reps, lambda: dst.copy_(src))[0]
    return {"raw": total / raw_s / 1e9, "ours": total / ours_s / 1e9, "copy": total / copy_s / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    total = args.mib * MIB
    results = {layout: measure(layout, total, args.reps) for layout in ("large", "small")}
    print(f"p2p_pull: {args.mib} MiB, host memory, two processes (GB/s, best of {args.reps})")
    for layout, r in results.items():
        tensors = 16 if layout == "large" else 4096
        print(
            f"  {layout:5s} ({tensors:4d} tensors): ours {r['ours']:6.2f}  raw NIXL {r['raw']:6.2f}  copy {r['copy']:6.2f}  "
            f"| ours/raw {r['ours'] / r['raw']:.2f}  ours/copy {r['ours'] / r['copy']:.2f}"
        )
    ratio = results["small"]["ours"] / results["large"]["ours"]
    print(f"  small/large rate (ours): {ratio:.2f}   [targets: large ours/raw >= 0.90, small/large >= 0.80]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
