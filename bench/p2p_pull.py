"""Our pull against a raw NIXL READ of the same bytes and an in-process copy, same run, host memory or GPU.

For each layout a source process serves the tensors (SourceWorker: NIXL + WorkerService) and the
target measures:
- raw NIXL: one READ of the source's whole region with one descriptor, connection already up (best case);
- ours: `pull()` of sources linked just before (`prepare_sources`: gRPC status + manifest + agent
  metadata + NIXL connection, what the vLLM loader does while vLLM builds its model): matching,
  chunked READs, a checksum of every tensor (xxh3 on host memory, row sums reduced on the GPU for VRAM);
- unverified: the same with `verification="off"` (what checking costs is the difference);
- cold: linking and the verified pull one after the other (a pull that prepared nothing);
- fixed cost, apart from the rates: register (the target's memory with NIXL, once, timed once), link
  (`prepare_sources`) and set-up (the pull's part before its first READ: matching the manifest to the
  target's tensors);
- copy: `torch` copying the same bytes inside one process (on the GPU: a device-to-device copy).
Layouts: `large` (16 tensors), `small` (4096 tensors), `moe` (100,000 tensors, the count of a large
mixture-of-experts model's rank) of --mib in all, and `llama8b` (the 291 bf16 tensor shapes of
Llama-3-8B, 15 GiB, whatever --mib says). Every layout's source runs for the whole
benchmark and the layouts are timed in turn, round after round (best of --reps rounds), so that the
small/large ratio compares the same minutes of a machine whose speed drifts.
Targets (issue 22, on the pull of linked sources; the cold ratio is printed beside): host: ours >= 0.9
of raw NIXL on large tensors, small >= 0.8 of the large rate, also with --checksum row-sum-64; GPU:
unverified >= 0.9 of raw on llama8b and large 8 GiB, ours >= 0.6 of the copy, small >= 0.5 of the
large rate.

Usage: python bench/p2p_pull.py [--mib 1024] [--reps 3]
       python bench/p2p_pull.py --checksum row-sum-64     (host memory, the GPU's checksum)
       python bench/p2p_pull.py --device cuda --layouts llama8b,large,small [--chunk-mib 64] [--inflight 4]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import torch
from timing import best_of

from modelexpress.config.worker import WorkerSettings
from modelexpress.p2p.client import WorkerClient
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PullOptions, prepare_sources, pull
from modelexpress.p2p.source import SourceWorker

MIB = 1 << 20
TENSOR_COUNTS = {"large": 16, "small": 4096, "moe": 100_000}


def llama8b_shapes() -> list[tuple[int, ...]]:
    """The 291 tensor shapes of Llama-3-8B (embedding, 32 layers of 9 tensors, final norm, LM head)."""
    hidden, inter, kv, vocab = 4096, 14336, 1024, 128256
    layer = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden)]
    layer += [(inter, hidden), (inter, hidden), (hidden, inter), (hidden,), (hidden,)]
    return [(vocab, hidden), *layer * 32, (hidden,), (vocab, hidden)]


def _specs(layout: str, total: int) -> list[TensorSpec]:
    if layout == "llama8b":
        return [TensorSpec(f"model.tensors.{i}", "bfloat16", shape) for i, shape in enumerate(llama8b_shapes())]
    count = TENSOR_COUNTS[layout]
    return [TensorSpec(f"model.layers.{i}.weight", "bfloat16", (total // count // 2,)) for i in range(count)]


def _serve(conn: Connection, layout: str, total: int, device: str) -> None:
    pool = allocate_pool(_specs(layout, total), device)
    torch.manual_seed(1)
    for tensor in pool.tensors.values():
        tensor.view(torch.int16).random_(-30000, 30000)
    source = SourceWorker(WorkerIdentity(model_name=f"bench/{layout}"), pool, WorkerSettings(worker_host="127.0.0.1"))
    source.start()
    conn.send(source.endpoint)
    conn.recv()
    source.stop()


def _synchronized(device: str, run: Callable[[], object]) -> Callable[[], None]:
    def timed() -> None:
        run()
        if device == "cuda":
            torch.cuda.synchronize()

    return timed


def _copy_seconds(nbytes: int, reps: int, device: str) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    return best_of(reps, _synchronized(device, lambda: dst.copy_(src)))[0]


class _Layout:
    """One layout under test: its source process, and a target registered with its own NIXL agent."""

    def __init__(self, layout: str, total: int, device: str, options: PullOptions) -> None:
        self.name = layout
        self.nbytes = sum(spec.nbytes for spec in _specs(layout, total))
        self.options = options
        self.identity = WorkerIdentity(model_name=f"bench/{layout}")
        ctx = mp.get_context("spawn")
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, layout, total, device))
        self.proc.start()
        self.endpoint = self.parent.recv()
        self.engine = NixlEngine()
        self.target = allocate_pool(_specs(layout, total), device)
        started = time.perf_counter()
        self.engine.register(self.target)  # once per process, after the engine has built its model
        self.register_s = time.perf_counter() - started
        client = WorkerClient(self.endpoint)
        manifest = client.manifest()
        self.remote = self.engine.add_remote(client.agent_metadata().metadata)
        client.close()
        self.src, self.dst = manifest.regions[0], self.target.regions[0]
        self.raw()  # connection wire-up, not timed
        self.times: dict[str, list[float]] = {key: [] for key in ("raw", "ours", "unverified", "cold", "link", "setup")}

    def raw(self) -> None:
        length = min(self.src.length, self.dst.length)
        read = self.engine.start_read(
            self.remote,
            [(self.dst.address, self.src.address, length)],
            self.dst.kind,
            self.dst.device_id,
            self.src.kind,
            self.src.device_id,
        )
        while (state := self.engine.state(read)) == "PROC":
            pass
        self.engine.release(read)
        if state != "DONE":
            raise RuntimeError("raw READ failed")

    def round(self, device: str) -> None:
        """One timing of each: raw NIXL, our pull, our pull unverified (each of sources linked just before)."""
        started = time.perf_counter()
        _synchronized(device, self.raw)()
        self.times["raw"].append(time.perf_counter() - started)
        for key, options in (
            ("ours", self.options),
            ("unverified", dataclasses.replace(self.options, verification="off")),
        ):
            with contextlib.suppress(AttributeError):  # a worker's one pull reads a layout not read before
                del self.target.columns
            started = time.perf_counter()
            prepared = prepare_sources([self.endpoint], self.identity, self.engine, options.connect_timeout)
            linked = time.perf_counter()
            result = pull(self.target, self.identity, [self.endpoint], self.engine, options, prepared=prepared)
            if device == "cuda":
                torch.cuda.synchronize()
            done = time.perf_counter()
            self.times[key].append(done - linked)
            if key == "ours":
                self.times["cold"].append(done - started)
                self.times["link"].append(linked - started)
                self.times["setup"].append(done - linked - result.seconds)

    def close(self) -> None:
        self.engine.remove_remote(self.remote)
        self.engine.deregister_all()
        self.parent.send("stop")
        self.proc.join(60)

    def figures(self, copy_s: float) -> dict[str, float]:
        best = {key: min(values) for key, values in self.times.items()}
        return {
            "bytes": self.nbytes,
            "raw": self.nbytes / best["raw"] / 1e9,
            "ours": self.nbytes / best["ours"] / 1e9,
            "unverified": self.nbytes / best["unverified"] / 1e9,
            "cold": self.nbytes / best["cold"] / 1e9,
            "copy": self.nbytes / copy_s / 1e9,
            "register_ms": self.register_s * 1e3,
            "link_ms": best["link"] * 1e3,
            "setup_ms": best["setup"] * 1e3,
        }


def measure(
    layouts: list[str], total: int, reps: int, device: str, options: PullOptions
) -> dict[str, dict[str, float]]:
    """Every layout's figures, the layouts measured in alternation, round after round, so that a ratio
    between two of them compares the same minutes of a machine whose speed drifts."""
    # the copy baselines first, so their buffers are gone before the sources and targets allocate theirs
    copies = {name: _copy_seconds(sum(s.nbytes for s in _specs(name, total)), reps, device) for name in layouts}
    under_test: list[_Layout] = []
    try:
        for name in layouts:
            under_test.append(_Layout(name, total, device, options))
        for _ in range(reps):
            for layout in under_test:
                layout.round(device)
        return {layout.name: layout.figures(copies[layout.name]) for layout in under_test}
    finally:
        for layout in under_test:
            layout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--layouts", default="large,small", help="comma-separated: large, small, moe, llama8b")
    parser.add_argument("--chunk-mib", type=int, default=0, help="0: the default for the memory kind")
    parser.add_argument("--inflight", type=int, default=PullOptions.max_inflight)
    parser.add_argument(
        "--checksum", choices=["auto", "xxh3-64", "row-sum-64"], default="auto",
        help="the checksum the source publishes (MX_CHECKSUM_ALGORITHM; auto: row-sum-64 on a GPU, else xxh3-64)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ["MX_CHECKSUM_ALGORITHM"] = args.checksum  # read by the source process's settings
    if args.device == "cuda" and not torch.cuda.is_available():
        print("p2p_pull: --device cuda needs a GPU; none is visible")
        return 2
    options = PullOptions(chunk_bytes=args.chunk_mib * MIB or None, max_inflight=args.inflight)
    total = args.mib * MIB
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    results = measure(layouts, total, args.reps, args.device, options)
    memory = "host memory" if args.device == "cpu" else "GPU memory"
    print(
        f"p2p_pull: {memory}, two processes, chunks of {args.chunk_mib or 'default'} MiB, {args.inflight} in flight, "
        f"source checksum {args.checksum} (GB/s, best of {args.reps} rounds, the layouts in turn each round; "
        "ours and unverified: pulls of sources linked first; cold: linking + pull; fixed cost: registering "
        "the target's memory (once), linking, and set-up, the pull's part before its first READ)"
    )
    for layout, r in results.items():
        print(
            f"  {layout:7s} ({r['bytes'] / 2**30:5.2f} GiB): ours {r['ours']:7.2f}  unverified {r['unverified']:7.2f}  "
            f"cold {r['cold']:7.2f}  raw NIXL {r['raw']:7.2f}  copy {r['copy']:7.2f}  "
            f"fixed: register {r['register_ms']:5.1f} + link {r['link_ms']:5.1f} + set-up {r['setup_ms']:5.1f} ms"
            f"  | ours/raw {r['ours'] / r['raw']:.2f} (cold {r['cold'] / r['raw']:.2f})"
            f"  unverified/raw {r['unverified'] / r['raw']:.2f}  ours/copy {r['ours'] / r['copy']:.2f}"
        )
    if "large" in results and "small" in results:
        ratio = results["small"]["ours"] / results["large"]["ours"]
        print(f"  small/large rate (ours): {ratio:.2f}   [host targets: large ours/raw >= 0.90, small/large >= 0.80]")
    if args.device == "cuda":
        print("  [GPU targets: unverified/raw >= 0.90 (llama8b, large 8 GiB), ours/copy >= 0.60, small/large >= 0.50]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
