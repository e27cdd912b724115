"""How fast the operator records workers in their ModelSourceSlices, and how many API requests it spends per worker event.

A real control plane (../shared/k8s), the real operator as a process, 256 real WorkerService servers
(tests/helpers/fleet_proc.py) behind 256 opted-in pods. All workers start Initializing and are
recorded; then all 256 turn Ready in one burst, and a watch on the slices times when each entry reads
Ready there. (`bench/source_slices.py` records 10,000 simulated ranks the same way.)

Figures (baselines from the same run):
- Ready -> in the CR latency, p50/p99, against one direct status PATCH round trip (the floor any
  recorder pays);
- API requests the operator made per worker event, counted by the API server
  (`apiserver_request_total` for modelmetadatas and modelsourceslices, watches excluded), against 1.0 for a recorder
  that writes once per event.

Usage: python bench/source_recording.py [--workers 256]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, watch  # noqa: E402
from operator_cluster import OperatorCluster, operator_cluster  # noqa: E402 - bench/ is on sys.path when run

from modelexpress.api.modelmetadata import ModelIdentity  # noqa: E402
from tests.harness.kube import recorded_sources, wait_for  # noqa: E402
from tests.helpers.sources import Fleet, fleet  # noqa: E402

GROUP, VERSION, PLURAL = "modelexpress.io", "v1alpha1", "modelmetadatas"


def apiserver_requests(server: str, token: str, ca_file: Path | None) -> float:
    """Non-watch requests on modelmetadatas and modelsourceslices (and their status) the API server has served."""
    import ssl

    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else ssl._create_unverified_context()
    request = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(request, context=context, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and ('resource="modelmetadatas"' in line or 'resource="modelsourceslices"' in line)
            and 'verb="WATCH"' not in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def operator_metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ready_burst(
    custom: client.CustomObjectsApi, fleet: Fleet, namespace: str, workers: int
) -> tuple[dict[str, float], list[float]]:
    """Turn every worker Ready at once; when each pod's entry read Ready in the CR, and when each was flipped."""
    seen: dict[str, float] = {}
    done = threading.Event()
    stream = watch.Watch()

    def follow() -> None:
        for event in stream.stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "modelsourceslices", timeout_seconds=300
        ):
            now = time.time()
            for source in (event["object"].get("status") or {}).get("sources", []):
                if source["state"] == "Ready":
                    seen.setdefault(source["pod"], now)
            if len(seen) >= workers:
                done.set()
                stream.stop()
                return

    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.5)
    for index in range(workers):
        fleet.command("state", index=index, state="Ready")
    flipped = fleet.command("ready_times")["times"]
    assert isinstance(flipped, list)
    if not done.wait(180):
        raise RuntimeError(f"only {len(seen)} of {workers} seen Ready")
    return seen, [float(t) for t in flipped]


def run(workers: int) -> dict[str, float]:
    metrics_port = 18000 + os.getpid() % 1000
    with operator_cluster("mx-bench-record-", ["--metrics-port", str(metrics_port)]) as cluster, fleet() as running:
        return measure(cluster, running, workers, metrics_port)


def measure(cluster: OperatorCluster, fleet: Fleet, workers: int, metrics_port: int) -> dict[str, float]:
    cp, core, custom, node, namespace = cluster.cp, cluster.core, cluster.custom, cluster.node, cluster.namespace
    name = ModelIdentity(model_name="bench/record").resource_name()
    pods = [f"w-{i:03d}" for i in range(workers)]
    uids = {
        p: core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": p, "annotations": {"modelexpress.io/p2p": "enabled"}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
            },
        ).metadata.uid
        for p in pods
    }
    ports = fleet.start([{"model": "bench/record", "pod": p, "uid": uids[p], "state": "Initializing"} for p in pods])
    for pod, port in zip(pods, ports, strict=True):
        core.patch_namespaced_pod(
            pod, namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": str(port)}}}
        )
        node.mark_running(namespace, pod, ip="127.0.0.1")

    def recorded() -> bool:
        return len(recorded_sources(custom, namespace, name)) == workers

    wait_for(recorded, 180, interval=0.5, what=f"{workers} workers recorded Initializing")
    time.sleep(2)  # let the operator settle before counting

    requests_before = apiserver_requests(cp.server, cp.admin_token, cp.ca_file)
    own_before = operator_metric(metrics_port, "modelexpress_operator_api_requests_total")
    seen, flipped = ready_burst(custom, fleet, namespace, workers)
    time.sleep(1)
    requests = apiserver_requests(cp.server, cp.admin_token, cp.ca_file) - requests_before
    own = operator_metric(metrics_port, "modelexpress_operator_api_requests_total") - own_before
    latencies = [seen[p] - flipped[i] for i, p in enumerate(pods)]

    # Baseline: one status PATCH round trip from here, the floor of any recorder.
    patches = []
    for _ in range(50):
        start = time.perf_counter()
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": {"readySources": workers}},
            _content_type="application/merge-patch+json",
        )
        patches.append(time.perf_counter() - start)
    return {
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
        "patch": statistics.median(patches),
        "requests": requests,
        "own_requests": own,
        "events": float(workers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=256)
    args = parser.parse_args()
    r: dict[str, Any] = run(args.workers)
    print(f"workers turning Ready at once: {args.workers}")
    print(f"  Ready -> in its slice: p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms")
    print(f"  one direct status PATCH (baseline): {r['patch'] * 1000:.1f} ms -> p50/patch {r['p50'] / r['patch']:.1f}x")
    per_event = r["requests"] / r["events"]
    print(
        f"  API requests on modelmetadatas and their slices per worker event: {per_event:.3f} "
        f"({r['requests']:.0f} for {r['events']:.0f} events; one write per event would be 1.000) "
        f"-> ratio {per_event:.3f}"
    )
    print(f"  requests the operator counted itself (all resources): {r['own_requests']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
