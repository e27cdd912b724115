"""Recording a fleet of one model in ModelSourceSlices: 256 ranks, then 10,000, on a real control plane.

A real kube-apiserver + etcd + controller-manager (../shared/k8s) and the operator's real `Recorder`,
in this process, writing through the real `kubernetes` client. The workers are simulated the way the
operator sees them: each is a WorkerService status message (identity, state, tensor count, bytes,
load) handed to `Recorder.observe` as the worker's status-stream task would, with no gRPC server
behind it (10,000 processes do not fit here; `bench/source_recording.py` keeps real WorkerService
servers and the operator as a process for a 256-worker sample). All workers are first recorded
Initializing; then all turn Ready in one burst, and a watch on the slices (as a worker's registry
keeps one) times when each entry reads Ready there.

Printed per fleet size, from one run:
- sources recorded (read back from the slices) and writes the API server refused (want 0);
- the largest object written (slice or ModelMetadata), in bytes of JSON (target: under 200 KB);
- API writes per worker event (the burst's writes / workers; one write per event would be 1.0);
- Ready -> recorded latency p50/p99, against one direct PATCH of a full slice's status (the floor of
  any one write) and against PATCHing every slice directly, as many at a time as the recorder does
  (the floor of a burst that changes every entry on this API server), both measured in the same run
  (targets: p99 < 100 ms at 256, < 1 s at 10,000);
- what one worker's read costs at that size: `find_ready` for one rank, as a worker calls it before a
  pull (a label-selected list of the model's slices, parsed and ranked), median of 5, with the bytes
  of the slices it reads;
- the CPU seconds kube-apiserver and etcd spent on the burst, and what that bounds: a burst cannot be
  recorded faster than the API server's CPU for it divided by the cores it has (here shared with etcd
  and this process).

Usage: python bench/source_slices.py [--sources 10000] [--small 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from modelexpress._proto.worker.v1 import worker_pb2  # noqa: E402
from modelexpress.api.modelsourceslice import metadata_selector  # noqa: E402
from modelexpress.p2p.identity import WorkerIdentity  # noqa: E402
from modelexpress.registry.kubernetes import KubernetesRegistry  # noqa: E402
from modelexpress_operator.recorder import SLICE_WRITERS, Recorder  # noqa: E402
from modelexpress_operator.settings import OperatorSettings  # noqa: E402
from modelexpress_operator.workers import WorkerTarget  # noqa: E402
from tests.harness.controlplane import locate_binaries, start_control_plane  # noqa: E402
from tests.harness.kube import make_api_client, wait_for  # noqa: E402

GROUP, VERSION, SLICES = "modelexpress.io", "v1alpha1", "modelsourceslices"
READS = 5


class Leader:
    active = True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def status(identity: WorkerIdentity, pod: str, state: int) -> worker_pb2.WorkerStatus:
    """What a TP8 worker rank's status stream says (an 8B model's shard: 291 tensors, 2 GB)."""
    return worker_pb2.WorkerStatus(
        state=state, identity=identity.to_proto(), agent_name=f"mx-{pod}-{identity.rank}", tensor_count=291,
        total_bytes=2_008_000_000, instance=pod, node_name=f"node-{hash(pod) % 500:03d}",
    )  # fmt: skip


def _address(pod: int) -> str:
    return f"10.{pod // 65536}.{pod // 256 % 256}.{pod % 256}"


class ProcessCpu:
    """CPU seconds (user + system) spent so far by the control plane's processes, read from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def now(self) -> dict[str, float]:
        spent = {}
        for name, pid in self.pids.items():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            spent[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return spent


def wait_until_idle(cpu: ProcessCpu, within: float = 60.0) -> None:
    """Wait until the API server is idle (under 10% of a core for half a second): a fresh one spends its
    first seconds building its OpenAPI from the CRDs, which would land in the first fleet's figures."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = cpu.now()["kube-apiserver"]
        time.sleep(0.5)
        if cpu.now()["kube-apiserver"] - before < 0.05:
            return


def refused() -> float:
    return REGISTRY.get_sample_value("modelexpress_operator_errors_total", {"where": "status-write"}) or 0.0


class SliceWatch:
    """A watch on the namespace's slices, as a worker's registry keeps one: when each rank's entry first reads Ready."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace
        self.seen: dict[tuple[str, int], float] = {}
        self.wanted = 0
        self.done = threading.Event()
        self._stream = watch.Watch()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            self._watch()
        except Exception:  # the stream closed under it at the end of the run
            if not self.done.is_set():
                raise

    def _watch(self) -> None:
        for event in self._stream.stream(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, SLICES, timeout_seconds=600
        ):
            now = time.time()
            for source in (event["object"].get("status") or {}).get("sources") or []:
                if source["state"] == "Ready":
                    self.seen.setdefault((source["pod"], source["rank"]), now)
            if self.wanted and len(self.seen) >= self.wanted:
                self.done.set()

    def stop(self) -> None:
        self._stream.stop()


async def record_fleet(api: client.ApiClient, namespace: str, sources: int, cpu: ProcessCpu) -> dict[str, float]:
    custom = client.CustomObjectsApi(api)
    model = f"bench/fleet-{sources}"
    identity = WorkerIdentity(model_name=model, tensor_parallel_size=8)
    recorder = Recorder(api, OperatorSettings(), Leader())
    targets = [
        WorkerTarget(namespace, f"w-{i // 8:05d}", f"uid-{sources}-{i // 8}", None, _address(i // 8), 50051 + i % 8)
        for i in range(sources)
    ]
    ranks = [identity.model_copy(update={"rank": i % 8}) for i in range(sources)]
    watcher = SliceWatch(custom, namespace)
    try:
        await asyncio.gather(*(recorder.observe(t, status(r, t.pod, worker_pb2.WORKER_STATE_INITIALIZING))
                               for t, r in zip(targets, ranks, strict=True)))  # fmt: skip
        name = next(iter(recorder.books.values())).name

        def all_recorded() -> bool:
            listed = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, SLICES, label_selector=metadata_selector(name)
            )
            return sum(len((i.get("status") or {}).get("sources") or []) for i in listed["items"]) == sources

        await asyncio.to_thread(wait_for, all_recorded, 300, 0.5, f"{sources} sources recorded Initializing")
        await asyncio.to_thread(wait_until_idle, cpu)
        writes_before, refused_before, cpu_before = recorder.writes, refused(), cpu.now()
        watcher.wanted = len(targets)
        flipped: dict[tuple[str, int], float] = {}
        ready = [status(r, t.pod, worker_pb2.WORKER_STATE_READY) for t, r in zip(targets, ranks, strict=True)]
        for target, rank in zip(targets, ranks, strict=True):  # every status stream reports Ready at once
            flipped[(target.pod, rank.rank)] = time.time()
        await asyncio.gather(*(recorder.observe(t, message) for t, message in zip(targets, ready, strict=True)))
        if not await asyncio.to_thread(watcher.done.wait, 300):
            raise RuntimeError(f"only {len(watcher.seen)} of {watcher.wanted} ranks seen Ready")
        cpu_burst = {k: v - cpu_before[k] for k, v in cpu.now().items()}
        await asyncio.sleep(1)  # the summary's write after the slices
        writes = recorder.writes - writes_before
        listed = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, SLICES, label_selector=metadata_selector(name)
        )
        recorded = sum(len((i.get("status") or {}).get("sources") or []) for i in listed["items"])
        metadata = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelmetadatas", name)
        sizes = [len(json.dumps(obj)) for obj in [*listed["items"], metadata]]
        patch = direct_patch(custom, namespace, listed["items"][0])
        floor = direct_burst(custom, namespace, listed["items"])
        latencies = [watcher.seen[rank] - flipped[rank] for rank in flipped]
        cpu_before_read = cpu.now()["kube-apiserver"]
        read, found = await asyncio.to_thread(worker_read, api, namespace, ranks[3])
        read_cpu = (cpu.now()["kube-apiserver"] - cpu_before_read) / READS
        return {
            "recorded": recorded, "slices": len(listed["items"]), "refused": refused() - refused_before,
            "largest": max(sizes), "metadata": sizes[-1], "writes": writes, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "patch": patch, "floor": floor, "ready_sources": metadata["status"]["readySources"],
            "read": read, "found": found, "read_cpu": read_cpu, "read_bytes": sum(len(json.dumps(i)) for i in listed["items"] if i["spec"].get("rank") == 3),
            "apiserver_cpu": cpu_burst["kube-apiserver"], "etcd_cpu": cpu_burst["etcd"], "own_cpu": cpu_burst["recorder"],
        }  # fmt: skip
    finally:
        watcher.stop()
        await recorder.close()


def worker_read(api: client.ApiClient, namespace: str, identity: WorkerIdentity) -> tuple[float, int]:
    """Median seconds of a worker's `find_ready` for one rank (list by label, parse, rank), and what it found."""
    registry = KubernetesRegistry(namespace, api=api)
    times, found = [], 0
    for _ in range(READS):
        started = time.perf_counter()
        found = len(registry.find_ready(identity))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def direct_patch(custom: client.CustomObjectsApi, namespace: str, piece: dict[str, Any]) -> float:
    """Median of 20 round trips of one PATCH of a full slice's status from here (the floor of a write)."""
    times = []
    for _ in range(20):
        started = time.perf_counter()
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, SLICES, piece["metadata"]["name"], {"status": piece["status"]},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def direct_burst(custom: client.CustomObjectsApi, namespace: str, pieces: list[dict[str, Any]]) -> float:
    """Seconds to PATCH every slice's status once from here, SLICE_WRITERS at a time: the floor of recording a
    burst that changes every entry, on this machine's API server."""

    def write(piece: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, SLICES, piece["metadata"]["name"], {"status": piece["status"]},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    started = time.perf_counter()
    with ThreadPoolExecutor(SLICE_WRITERS) as pool:
        list(pool.map(write, pieces))
    return time.perf_counter() - started


def report(sources: int, r: dict[str, float]) -> None:
    print(f"{sources} ranks of one model (TP8: {sources // 8} pods), all turning Ready at once:")
    print(f"  sources recorded: {r['recorded']:.0f} in {r['slices']:.0f} slice(s), {r['ready_sources']:.0f} Ready in "
          f"the ModelMetadata; writes refused: {r['refused']:.0f}")  # fmt: skip
    print(f"  largest object: {r['largest'] / 1000:.1f} KB (ModelMetadata {r['metadata'] / 1000:.1f} KB)")
    print(f"  API writes per worker event: {r['writes'] / sources:.4f} ({r['writes']:.0f} for {sources} events)")
    print(f"  Ready -> recorded: p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms; one direct PATCH of "
          f"a full slice {r['patch'] * 1000:.1f} ms -> p99/PATCH {r['p99'] / r['patch']:.1f}x")  # fmt: skip
    print(f"  every slice PATCHed directly, {SLICE_WRITERS} at a time (this API server's floor for the burst): "
          f"{r['floor'] * 1000:.0f} ms -> p99/floor {r['p99'] / r['floor']:.2f}x")  # fmt: skip
    print(f"  one worker's read before a pull (find_ready, rank 3): {r['read'] * 1000:.0f} ms for {r['found']:.0f} "
          f"sources, reading {r['read_bytes'] / 1e6:.2f} MB of rank-3 slices (kube-apiserver CPU {r['read_cpu'] * 1000:.0f} ms)")  # fmt: skip
    cores = os.cpu_count() or 1
    print(f"  CPU spent on the burst: kube-apiserver {r['apiserver_cpu']:.2f} s ({r['apiserver_cpu'] / sources * 1e6:.0f} us "
          f"per entry written), etcd {r['etcd_cpu']:.2f} s, recorder and watch {r['own_cpu']:.2f} s; on {cores} cores the API server alone needs >= "
          f"{r['apiserver_cpu'] / cores * 1000:.0f} ms")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=256, help="the fleet measured first, for comparison")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mx-bench-slices-"))
    cp = start_control_plane(work / "cp", locate_binaries(), crd_dir=ROOT / "crds")
    cpu = ProcessCpu({Path(str(p.args[0])).name: p.pid for p in cp.processes if isinstance(p.args, list)})
    cpu.pids["recorder"] = os.getpid()  # this process: the operator's recorder and the watch
    try:
        core = client.CoreV1Api(make_api_client(cp.server, cp.admin_token, cp.ca_file))
        for size in (args.small, args.sources):
            namespace = f"bench-{size}"
            core.create_namespace({"metadata": {"name": namespace}})
            api = make_api_client(cp.server, cp.admin_token, cp.ca_file)
            report(size, asyncio.run(record_fleet(api, namespace, size, cpu)))
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
