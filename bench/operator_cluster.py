"""A control plane with the real operator as a process, for the fleet benchmarks (imported from bench/).

`operator_cluster(prefix)` starts kube-apiserver + etcd + controller-manager (../shared/k8s), creates
the namespace `bench` and a node helper playing the kubelet, runs the operator watching that
namespace, and stops them all when the block ends, even on failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness.controlplane import ControlPlane, locate_binaries, start_control_plane  # noqa: E402
from tests.harness.kube import make_api_client, wait_for  # noqa: E402
from tests.harness.node import NodeHelper  # noqa: E402

NAMESPACE = "bench"


@dataclass
class OperatorCluster:
    cp: ControlPlane
    api: client.ApiClient
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    node: NodeHelper
    namespace: str = NAMESPACE


@contextmanager
def operator_cluster(prefix: str, operator_args: list[str] | None = None) -> Iterator[OperatorCluster]:
    """The cluster of the docstring; `operator_args` go to `python -m modelexpress_operator`."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    cp = start_control_plane(work / "cp", locate_binaries(), crd_dir=ROOT / "crds")
    operator: subprocess.Popen[bytes] | None = None
    try:
        api = make_api_client(cp.server, cp.admin_token, cp.ca_file)
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        wait_for(lambda: core.list_namespaced_service_account(NAMESPACE).items, 30, what="default ServiceAccount")
        node = NodeHelper(api, work / "node", cp.server, cp.ca_file)
        operator = subprocess.Popen(
            [sys.executable, "-m", "modelexpress_operator", "--namespace", NAMESPACE, "--standalone",
             "--health-port", "0", *(operator_args or [])],
            env={**os.environ, "KUBECONFIG": str(cp.kubeconfig), "MX_STATUS_TTL_SECS": "300", "PYTHONPATH": str(ROOT)},
            stdout=(work / "operator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        yield OperatorCluster(cp, api, core, client.CustomObjectsApi(api), node)
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
        cp.stop()
