"""How often a target's sources cross a zone (or a domain) when ranked by topology, against random choice.

A real control plane (../shared/k8s), the real operator as a process, 256 real WorkerService
servers (tests/helpers/fleet_proc.py) behind 256 opted-in pods spread over 32 labelled nodes (4 zones
x 2 NVLink cliques x 4 nodes; the sources on two nodes of each clique). The operator records each
source's zone and domain and publishes the node map; then 256 targets, each on a random one of the
nodes that hold no source (so the same-node tier never decides), ask the Kubernetes registry for
sources (as workers do: ModelMetadata plus the topology ConfigMap) and take the first
`MX_MAX_SOURCES` (4). The baseline, in the same run: 4 Ready sources picked at random.

Figures: the fraction of chosen sources in another zone, and in another domain, ranked vs random.

Usage: python bench/source_choice.py [--workers 256] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client  # noqa: E402
from operator_cluster import operator_cluster  # noqa: E402 - bench/ is on sys.path when a benchmark runs

from modelexpress.api.modelmetadata import ModelIdentity  # noqa: E402
from modelexpress.p2p.identity import WorkerIdentity  # noqa: E402
from modelexpress.registry.kubernetes import KubernetesRegistry  # noqa: E402
from modelexpress.registry.ranking import Placement  # noqa: E402
from tests.harness.kube import recorded_sources, wait_for  # noqa: E402
from tests.harness.node import NodeHelper  # noqa: E402
from tests.helpers.sources import Fleet  # noqa: E402
from tests.helpers.sources import fleet as fleet_of_workers  # noqa: E402

ZONES, CLIQUES, PER_CLIQUE, STRIPE = 4, 2, 4, 4


def label_nodes(core: client.CoreV1Api) -> dict[str, tuple[str, str]]:
    """Create the labelled Node objects; node -> (zone, clique)."""
    places: dict[str, tuple[str, str]] = {}
    for z in range(ZONES):
        for c in range(CLIQUES):
            for n in range(PER_CLIQUE):
                name = f"gpu-z{z}-c{c}-{n}"
                places[name] = (f"zone-{z}", f"clique-{z}-{c}")
                labels = {"topology.kubernetes.io/zone": places[name][0], "nvidia.com/gpu.clique": places[name][1]}
                core.create_node({"metadata": {"name": name, "labels": labels}})
    return places


def start_sources(
    core: client.CoreV1Api, node: NodeHelper, fleet: Fleet, namespace: str, nodes: list[str], workers: int
) -> None:
    """`workers` opted-in pods spread evenly over `nodes`, each with a Ready WorkerService, reported Running."""
    pods = [f"w-{i:03d}" for i in range(workers)]
    uids = {}
    for i, pod in enumerate(pods):
        body = {
            "metadata": {"name": pod, "annotations": {"modelexpress.io/p2p": "enabled"}},
            "spec": {"nodeName": nodes[i % len(nodes)], "containers": [{"name": "vllm", "image": "vllm"}]},
        }
        uids[pod] = core.create_namespaced_pod(namespace, body).metadata.uid
    ports = fleet.start([{"model": "bench/choice", "pod": p, "uid": uids[p]} for p in pods])
    for pod, port in zip(pods, ports, strict=True):
        core.patch_namespaced_pod(
            pod, namespace, {"metadata": {"annotations": {"modelexpress.io/worker-port": str(port)}}}
        )
        node.mark_running(namespace, pod, ip="127.0.0.1")


def report(
    registry: KubernetesRegistry,
    identity: WorkerIdentity,
    places: dict[str, tuple[str, str]],
    nodes: list[str],
    targets: int,
    rng: random.Random,
) -> None:
    """Choose sources for `targets` targets on random nodes, ranked and at random; print the crossings."""
    crossed = {"ranked": [0, 0], "random": [0, 0]}  # [other zone, other domain]
    chosen_total = 0
    started = time.perf_counter()
    for _ in range(targets):
        here = rng.choice(nodes)
        zone, domain = places[here]
        ready = registry.find_ready(identity, Placement(node=here))
        picks = {"ranked": ready[:STRIPE], "random": rng.sample(ready, STRIPE)}
        for how, chosen in picks.items():
            for record in chosen:
                crossed[how][0] += record.zone != zone
                crossed[how][1] += record.domain != domain
        chosen_total += STRIPE
    seconds = time.perf_counter() - started
    registry.close()
    print(f"{len(ready)} sources on {len(places) - len(nodes)} of {len(places)} nodes ({ZONES} zones x {CLIQUES} "
          f"cliques x {PER_CLIQUE}); {targets} targets on the other nodes x {STRIPE} sources each; this host")  # fmt: skip
    print(f"{'choice':<8} {'other zone':>11} {'other domain':>13}")
    for how, (zones, domains) in crossed.items():
        print(f"{how:<8} {zones / chosen_total:>11.1%} {domains / chosen_total:>13.1%}")
    print(f"registry lookups (list + rank): {seconds / targets * 1000:.1f} ms each")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with operator_cluster("mx-bench-choice-") as cluster, fleet_of_workers() as fleet:
        core, namespace = cluster.core, cluster.namespace
        places = label_nodes(core)
        identity = WorkerIdentity(model_name="bench/choice")
        resource = ModelIdentity.of(identity).resource_name()
        nodes = sorted(places)
        holding = [n for n in nodes if int(n.rsplit("-", 1)[1]) < PER_CLIQUE // 2]
        empty = [n for n in nodes if n not in holding]
        start_sources(core, cluster.node, fleet, namespace, holding, args.workers)

        def recorded() -> bool:
            sources = recorded_sources(cluster.custom, namespace, resource)
            return len(sources) == args.workers and all(s.get("zone") and s["state"] == "Ready" for s in sources)

        wait_for(recorded, 240, interval=0.5, what=f"{args.workers} sources recorded with their zones")
        for target_node in empty:  # a target's pod, scheduled and not started yet: its node gets published
            body = {
                "metadata": {"name": f"target-{target_node}", "annotations": {"modelexpress.io/p2p": "enabled"}},
                "spec": {"nodeName": target_node, "containers": [{"name": "vllm", "image": "vllm"}]},
            }
            core.create_namespaced_pod(namespace, body)

        def published() -> bool:
            try:
                data = core.read_namespaced_config_map("modelexpress-topology", namespace).data or {}
            except client.ApiException:
                return False
            return set(places) <= set(data)

        wait_for(published, 60, interval=0.5, what="every node in the topology ConfigMap")
        report(KubernetesRegistry(namespace, api=cluster.api), identity, places, empty, args.workers, rng)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
