"""Control plane of a pull for a 100k-tensor manifest, and NIXL registration per tensor vs pooled.

- serve + fetch + match + plan for 100,000 tensors: a WorkerService on loopback serves the manifest;
  the target fetches it (paged, front-coded), matches its own layout against it, lays out its byte
  stream, maps it onto the source's (runs), cuts chunks and builds every chunk's coalesced
  descriptor list. Target (issue 10): < 1 s.
- registration of 4096 tensors: one NIXL registration per tensor against one for the pooled
  allocation holding them, same run (the H100 reference: 0.25 s against 0.4 ms).

Usage: python bench/control_plane.py [--tensors 100000]
"""

from __future__ import annotations

import argparse
import time

import torch

from modelexpress.p2p.client import WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.manifest import Manifest
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.plan import SourceMap, match
from modelexpress.p2p.service import WorkerInfo, WorkerServer
from modelexpress.p2p.stream import Stream, make_chunks


def control_plane(count: int) -> dict[str, float]:
    specs = [
        TensorSpec(f"model.layers.{i // 64}.mlp.experts.{i % 64}.down_proj.weight", "bfloat16", (64,))
        for i in range(count)
    ]
    source = allocate_pool(specs)
    manifest = Manifest.build(
        WorkerIdentity(model_name="bench/100k"), source, {s.name: i for i, s in enumerate(specs)}, "xxh3-64"
    )
    server = WorkerServer(WorkerInfo(agent_name="bench"), "127.0.0.1", 0)
    server.publish(manifest, b"")
    server.set_state("Ready")
    server.start()
    target = allocate_pool(specs)
    try:
        start = time.perf_counter()
        client = WorkerClient(f"127.0.0.1:{server.port}")
        fetched = client.manifest()
        fetched_at = time.perf_counter()
        rows = match(target, fetched)
        matched_at = time.perf_counter()
        stream = Stream(target)
        source = SourceMap(target, fetched, rows, stream)
        runs = [source.descriptors(c) for c in make_chunks(target, stream=stream)]
        done = time.perf_counter()
        client.close()
    finally:
        server.stop(grace=0)
    return {
        "fetch": fetched_at - start,
        "match": matched_at - fetched_at,
        "descriptors": done - matched_at,
        "total": done - start,
        "runs": float(sum(len(r) for r in runs)),
    }


def registration(count: int = 4096, size: int = 256 << 10) -> tuple[float, float]:
    engine = NixlEngine()
    agent = engine._agent
    tensors = [torch.empty(size, dtype=torch.uint8) for _ in range(count)]
    start = time.perf_counter()
    handles = [agent.register_memory(agent.get_reg_descs([(t.data_ptr(), size, 0, "")], "DRAM")) for t in tensors]
    per_tensor = time.perf_counter() - start
    for handle in handles:
        agent.deregister_memory(handle)
    pool = allocate_pool([TensorSpec(f"t{i}", "uint8", (size,)) for i in range(count)])
    start = time.perf_counter()
    engine.register(pool)
    pooled = time.perf_counter() - start
    engine.deregister_all()
    return per_tensor, pooled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=100_000)
    args = parser.parse_args()
    cp = control_plane(args.tensors)
    print(
        f"control_plane: {args.tensors} tensors: fetch {cp['fetch']:.3f} s, match {cp['match']:.3f} s, "
        f"plan {cp['descriptors']:.3f} s -> total {cp['total']:.3f} s ({int(cp['runs'])} descriptor runs) "
        f"[target < 1 s: {'met' if cp['total'] < 1 else 'MISSED'}]"
    )
    per_tensor, pooled = registration()
    print(
        f"registration of 4096 tensors: one by one {per_tensor:.4f} s, pooled {pooled:.5f} s, "
        f"ratio {per_tensor / max(pooled, 1e-9):.0f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
