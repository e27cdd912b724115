"""Baseline: NIXL READ between two processes on host memory, against an in-process copy of the same bytes.

Two layouts of the same total size are pulled by a target process from a source process with the UCX
backend: one pooled allocation read with a single descriptor, and many small tensors read with one
descriptor each. Each transfer is verified by checksum before its figure counts. The ratio against
`torch` copying the same bytes in one process is the figure to compare (absolute GB/s depend on the
machine). This is the yardstick the transfer engine is measured against.

The pooled READ is also timed beside a thread that hashes other memory (xxh3, without pause), the
two alternated round by round: what a pull's checksum thread costs the copy when both share the
machine's memory bandwidth (the ratio of the two in the same run).

Usage: python bench/nixl_host_read.py [--mib 256] [--tensors 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import torch

MIB = 1 << 20


def _tensors(layout: str, total: int, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if layout == "pooled":
        return [torch.randint(0, 256, (total,), dtype=torch.uint8, generator=gen)]
    return [torch.randint(0, 256, (total // count,), dtype=torch.uint8, generator=gen) for _ in range(count)]


def _digest(tensors: list[torch.Tensor]) -> int:
    return sum(int(t.to(torch.int64).sum()) * (i + 1) for i, t in enumerate(tensors))


def _agent(name: str) -> Any:
    from nixl._api import nixl_agent, nixl_agent_config

    return nixl_agent(name, nixl_agent_config(backends=["UCX"]))


def _source(conn: Connection, total: int, count: int) -> None:
    agent = _agent("bench-source")
    layouts = {name: _tensors(name, total, count, seed=i) for i, name in enumerate(("pooled", "per-tensor"))}
    for tensors in layouts.values():
        agent.register_memory(tensors)
    conn.send(
        {
            "metadata": agent.get_agent_metadata(),
            "descs": {name: agent.get_serialized_descs(agent.get_xfer_descs(t)) for name, t in layouts.items()},
            "digests": {name: _digest(t) for name, t in layouts.items()},
        }
    )
    conn.recv()  # the target is done: keep the memory registered until then


def _target(conn: Connection, total: int, count: int, reps: int, results: Any) -> None:
    agent = _agent("bench-target")
    layouts = {
        name: [torch.zeros_like(t) for t in _tensors(name, total, count, seed=99)] for name in ("pooled", "per-tensor")
    }
    for tensors in layouts.values():
        agent.register_memory(tensors)
    offer = conn.recv()
    remote = agent.add_remote_agent(offer["metadata"])
    out: dict[str, Any] = {}
    for name, tensors in layouts.items():
        handle = agent.initialize_xfer(
            "READ", agent.get_xfer_descs(tensors), agent.deserialize_descs(offer["descs"][name]), remote
        )
        best = busy = float("inf")
        for _ in range(reps):
            best = min(best, _read(agent, handle, name))
            if name == "pooled":
                busy = min(busy, _beside_hashing(lambda: _read(agent, handle, name), total))  # noqa: B023
        agent.release_xfer_handle(handle)
        out[name] = {
            "seconds": best,
            "descriptors": len(tensors),
            "verified": _digest(tensors) == offer["digests"][name],
        }
        if name == "pooled":
            out[name]["beside_hashing"] = busy
    results.put(out)
    conn.send("done")


def _read(agent: Any, handle: Any, name: str) -> float:
    start = time.perf_counter()
    state = agent.transfer(handle)
    while state not in ("DONE", "ERR"):
        state = agent.check_xfer_state(handle)
    if state == "ERR":
        raise RuntimeError(f"{name}: NIXL transfer failed")
    return time.perf_counter() - start


def _beside_hashing(timed: Any, total: int) -> float:
    """`timed()` while another thread hashes a buffer of `total` bytes over and over."""
    import xxhash

    data = torch.ones(total, dtype=torch.uint8).numpy().data
    stop = threading.Event()

    def hash_until_stopped() -> None:
        while not stop.is_set():
            for at in range(0, len(data), 16 * MIB):
                xxhash.xxh3_64_intdigest(data[at : at + 16 * MIB])
                if stop.is_set():
                    return

    thread = threading.Thread(target=hash_until_stopped)
    thread.start()
    time.sleep(0.02)
    try:
        return float(timed())
    finally:
        stop.set()
        thread.join()


def _local_copy(total: int, reps: int) -> float:
    src = torch.randint(0, 256, (total,), dtype=torch.uint8)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="bytes per layout, in MiB")
    parser.add_argument("--tensors", type=int, default=1024, help="tensors in the per-tensor layout")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (best is kept)")
    args = parser.parse_args()
    total = args.mib * MIB
    ctx = mp.get_context("spawn")
    src_end, dst_end = ctx.Pipe()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_source, args=(src_end, total, args.tensors)),
        ctx.Process(target=_target, args=(dst_end, total, args.tensors, args.reps, results)),
    ]
    for proc in procs:
        proc.start()
    try:
        measured = results.get(timeout=300)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    baseline = _local_copy(total, args.reps)
    base_rate = total / baseline / 1e9
    print(f"nixl_host_read: {args.mib} MiB per layout; baseline in-process torch copy {base_rate:.2f} GB/s")
    failed = False
    for name, r in measured.items():
        rate = total / r["seconds"] / 1e9
        failed |= not r["verified"]
        print(
            f"  NIXL READ {name:10s} {r['descriptors']:5d} descriptor(s)  {rate:7.2f} GB/s  "
            f"ratio vs copy {rate / base_rate:5.3f}  verified={r['verified']}"
        )
    pooled, per_tensor = measured["pooled"]["seconds"], measured["per-tensor"]["seconds"]
    print(f"  pooled vs per-tensor descriptors: {per_tensor / pooled:.2f}x faster")
    beside = measured["pooled"]["beside_hashing"]
    print(
        f"  pooled READ beside a thread hashing other memory: {total / beside / 1e9:7.2f} GB/s, "
        f"{pooled / beside:.2f} of its rate alone (memory bandwidth a checksum thread takes from the copy)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
