"""A real one-node Kubernetes cluster for the end-to-end suite: the shared control plane and node scripts.

`../shared/k8s/control-plane.sh` (etcd, kube-apiserver, kube-controller-manager, advertising this
machine's address so pods reach the API server through the `kubernetes` Service) and
`../shared/k8s/node/node.sh` (containerd, runc, a CNI bridge, kubelet, kube-scheduler, kube-proxy),
with the project's images imported before anything asks for them: no registry is ever tried. Pods get
198.18.0.0/24 and Services 198.19.0.0/24, ranges that exist only inside this machine.

Everything started is stopped again, even when a step fails; the logs (control plane, node, and what
the suite collected from pods) are copied to `.cache/e2e-node/logs/` first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
NODE_TOOLS = Path(os.environ.get("MX_NODE_TOOLS", ROOT.parent / "shared" / "k8s" / "node"))
CONTROL_PLANE = NODE_TOOLS.parent / "control-plane.sh"
IMAGES = Path(os.environ.get("MX_E2E_IMAGES", ROOT / ".cache" / "images"))
IMAGE_TARS = ("modelexpress-operator.tar", "modelexpress-worker.tar")
LOGS = ROOT / ".cache" / "e2e-node" / "logs"
POD_CIDR, SERVICE_CIDR = "198.18.0.0/24", "198.19.0.0/24"
NEEDED_COMMANDS = ("containerd", "runc", "ctr", "iptables", "conntrack", "kubectl")


class ClusterSetupError(RuntimeError):
    """The suite cannot start here; the message says what is missing and how to get it."""


def host_address() -> str:
    """This machine's own address (eth0): what the API server advertises and what pods dial the hub at."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], check=False, capture_output=True, text=True)
    fields = out.stdout.split()
    if out.returncode != 0 or "inet" not in fields:
        raise ClusterSetupError("no IPv4 address on eth0: the API server and the hub need one that pods can reach")
    return fields[fields.index("inet") + 1].split("/")[0]


def check_prerequisites() -> list[Path]:
    """The image tars to import; raises with the fix when something the suite needs is missing."""
    if os.geteuid() != 0:
        raise ClusterSetupError("the node needs root (containerd, kubelet, iptables): run `make e2e-node` as root")
    missing = [c for c in NEEDED_COMMANDS if shutil.which(c) is None]
    if missing:
        raise ClusterSetupError(
            f"missing {', '.join(missing)}: apt-get install containerd runc containernetworking-plugins iptables "
            "conntrack (kubectl: your distribution's package)"
        )
    if not (NODE_TOOLS / "node.sh").exists() or not CONTROL_PLANE.exists():
        raise ClusterSetupError(f"no node tools at {NODE_TOOLS}: set MX_NODE_TOOLS to the folder holding node.sh")
    tars = [IMAGES / name for name in IMAGE_TARS]
    absent = [str(t) for t in tars if not t.exists()]
    if absent:
        raise ClusterSetupError(f"no images at {', '.join(absent)}: run `make images` first")
    return tars


@dataclass
class Cluster:
    """A running control plane and node; `stop()` ends both and removes what they wrote."""

    workdir: Path
    address: str
    kubeconfig: Path
    api: client.ApiClient
    node_name: str
    timings: dict[str, float] = field(default_factory=dict)
    _forward_rules: list[list[str]] = field(default_factory=list)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """`kubectl ARGS` against this cluster, as a user types it; its output (a failure raises with it)."""
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout + (done.stderr if done.returncode else "")

    def collect_logs(self) -> Path:
        """Copy the control plane's and the node's logs, and every pod's, to LOGS; returns it."""
        shutil.rmtree(LOGS, ignore_errors=True)
        LOGS.mkdir(parents=True)
        for part in ("cp", "node"):
            source = self.workdir / part / "logs"
            if source.exists():
                shutil.copytree(source, LOGS / part)
        pods = LOGS / "pods"
        pods.mkdir()
        try:
            listing = client.CoreV1Api(self.api).list_pod_for_all_namespaces().items
        except Exception:  # the API server may be the thing that failed
            listing = []
        for pod in listing:
            for container in pod.spec.containers:
                name = f"{pod.metadata.namespace}_{pod.metadata.name}_{container.name}.log"
                text = self.kubectl(
                    "-n", pod.metadata.namespace, "logs", pod.metadata.name, "-c", container.name, check=False
                )
                (pods / name).write_text(text)
        (LOGS / "state.txt").write_text(
            self.kubectl(
                "get",
                "pods,jobs,pvc,pv,modelcaches,modelmetadatas,modelsourceslices,events",
                "-A",
                "-o",
                "wide",
                check=False,
            )
        )
        return LOGS

    def stop(self) -> None:
        node = ["bash", str(NODE_TOOLS / "node.sh"), "stop", str(self.workdir / "node"), str(self.kubeconfig)]
        subprocess.run(node, check=False, capture_output=True, timeout=180)
        cp = ["bash", str(CONTROL_PLANE), "stop", str(self.workdir / "cp")]
        subprocess.run(cp, check=False, capture_output=True, timeout=60)
        for rule in self._forward_rules:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _allow_pod_forwarding() -> list[list[str]]:
    """Pods on the bridge reach each other through the FORWARD chain (bridge-nf-call-iptables). A Docker
    engine started on this machine sets its policy to DROP; then accept the pod range explicitly (rules
    removed at the end). Returns the rules added."""
    listed = subprocess.run(["iptables", "-S", "FORWARD"], check=True, capture_output=True, text=True)
    policy = listed.stdout.splitlines()
    if "-P FORWARD DROP" not in policy:
        return []
    rules = [["FORWARD", "-s", POD_CIDR, "-j", "ACCEPT"], ["FORWARD", "-d", POD_CIDR, "-j", "ACCEPT"]]
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True)
    return rules


def start_cluster() -> Cluster:
    """Control plane, then the node with the images imported; raises ClusterSetupError or with the logs' place."""
    tars = check_prerequisites()
    address = host_address()
    workdir = Path(tempfile.mkdtemp(prefix="mx-e2e-"))
    env = {**os.environ, "CP_BIND_ADDRESS": "0.0.0.0", "CP_ADVERTISE_ADDRESS": address, "CP_SERVICE_CIDR": SERVICE_CIDR}
    timings: dict[str, float] = {}
    started = time.monotonic()
    cp = subprocess.run(["bash", str(CONTROL_PLANE), "start", str(workdir / "cp")], env=env, check=False,
                        capture_output=True, text=True, timeout=180)  # fmt: skip
    kubeconfig = workdir / "cp" / "kubeconfig"
    api = config.new_client_from_config(str(kubeconfig))
    cluster = Cluster(workdir, address, kubeconfig, api, node_name="")
    if cp.returncode != 0:
        cluster.collect_logs()
        cluster.stop()
        raise ClusterSetupError(f"the control plane did not start:\n{cp.stdout}{cp.stderr}\nlogs: {LOGS}")
    timings["control plane"] = time.monotonic() - started
    cluster._forward_rules = _allow_pod_forwarding()
    started = time.monotonic()
    node = subprocess.run(
        ["bash", str(NODE_TOOLS / "node.sh"), "start", str(workdir / "node"), str(kubeconfig)],
        env={**env, "IMAGES": " ".join(str(t) for t in tars)},
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if node.returncode != 0 or "NODE=" not in node.stdout:
        cluster.collect_logs()
        cluster.stop()
        raise ClusterSetupError(f"the node did not start:\n{node.stdout}{node.stderr}\nlogs: {LOGS}")
    cluster.node_name = node.stdout.split("NODE=")[1].split()[0]
    timings["node with images imported"] = time.monotonic() - started
    cluster.timings.update(timings)
    return cluster
