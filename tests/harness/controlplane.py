"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager on 127.0.0.1.

The envtest arrangement (no scheduler, no kubelet). Binaries come from `$KUBEBUILDER_ASSETS` (the
envtest convention) or are unpacked once from `../shared/k8s/k8s-*.tar.xz` into `.cache/k8s/`.
The flags follow `../shared/k8s/control-plane.sh`, with two controllers left out because no kubelet
heartbeats a node here: node-lifecycle (it would taint the test node unreachable) and taint-eviction
(it would then delete the test pods).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.kube import apply_crds, make_api_client, write_kubeconfig
from tests.harness.processes import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
ENVTEST_HINT = (
    "no Kubernetes control plane binaries found: set KUBEBUILDER_ASSETS to a directory holding etcd, "
    "kube-apiserver and kube-controller-manager (e.g. `setup-envtest use 1.36 -p path`), or put the "
    "project's shared/ directory (with k8s/k8s-*-linux-amd64.tar.xz) beside the repository"
)


class ControlPlaneUnavailableError(RuntimeError):
    """The binaries cannot be found; the message says how to get them."""


def _archive_candidates() -> list[Path]:
    explicit = os.environ.get("MX_K8S_ARCHIVE")
    if explicit:
        return [Path(explicit)]
    return sorted((ROOT.parent / "shared" / "k8s").glob("k8s-*-linux-amd64.tar.xz"))


def locate_binaries(cache_dir: Path = ROOT / ".cache" / "k8s") -> Path:
    """Directory holding the three binaries: $KUBEBUILDER_ASSETS, else the shared archive unpacked once."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        directory = Path(assets)
        missing = [b for b in BINARIES if not (directory / b).exists()]
        if missing:
            raise ControlPlaneUnavailableError(f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}")
        return directory
    archives = _archive_candidates()
    if not archives or not archives[-1].exists():
        raise ControlPlaneUnavailableError(ENVTEST_HINT)
    archive = archives[-1]
    target = cache_dir / archive.name.removesuffix(".tar.xz")
    if all((target / b).exists() for b in BINARIES):
        return target
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(staging, filter="tar")
    if target.exists():  # another run unpacked it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.replace(target)
    return target


def _write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "sa.key", directory / "sa.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@dataclass
class ControlPlane:
    """A running control plane; `stop()` ends every process it started."""

    workdir: Path
    server: str
    admin_token: str
    ca_file: Path
    kubeconfig: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per request made by a ServiceAccount (what RBAC tests check usage with)."""
        return self.workdir / "logs" / "audit.log"

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        # A graceful stop took the whole 10 s grace it was given (one of them waits it out); nothing of a
        # test run is kept, so what has not ended after a short grace is killed.
        deadline = time.monotonic() + 2
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.processes.clear()

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _spawn(cp: ControlPlane, name: str, argv: list[str]) -> None:
    log = (cp.workdir / "logs" / f"{name}.log").open("wb")
    # Own session, so a Ctrl-C aimed at pytest does not hit them mid-shutdown; stop() signals them, and
    # the parent-death signal ends them if the test process itself dies without cleaning up.
    cp.processes.append(
        subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - one libc call, loaded before fork
        )
    )


def _wait_ready(cp: ControlPlane, timeout: float) -> None:
    context = ssl.create_default_context(cafile=str(cp.ca_file)) if cp.ca_file.exists() else None
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        for proc in cp.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; logs in {cp.workdir / 'logs'}")
        if context is None and cp.ca_file.exists():
            context = ssl.create_default_context(cafile=str(cp.ca_file))
        if context is not None:
            request = urllib.request.Request(
                f"{cp.server}/readyz", headers={"Authorization": f"Bearer {cp.admin_token}"}
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last_error = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"kube-apiserver not ready after {timeout}s ({last_error}); logs in {cp.workdir / 'logs'}")


def start_control_plane(
    workdir: Path,
    binaries: Path,
    crd_dir: Path | None = None,
    controller_manager: bool = True,
    timeout: float = 60,
) -> ControlPlane:
    """Start etcd and kube-apiserver, install the CRDs of `crd_dir`, then kube-controller-manager.

    CRDs go in before the controller manager starts so that its garbage collector knows their kinds
    from the start (it otherwise learns new resource types only on its 30-second discovery resync).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    certs = workdir / "certs"
    certs.mkdir(exist_ok=True)
    sa_key, sa_pub = _write_service_account_keys(workdir)
    token = secrets.token_hex(16)
    (workdir / "tokens.csv").write_text(f"{token},admin,admin-uid,system:masters\n")
    etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    ca_file = certs / "apiserver.crt"
    cp = ControlPlane(workdir, server, token, ca_file, workdir / "kubeconfig")
    # Metadata of every ServiceAccount request (who, verb, resource, response code), nothing else.
    (workdir / "audit-policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
        "  - level: Metadata\n    userGroups: [system:serviceaccounts]\n  - level: None\n"
    )
    try:
        _spawn(
            cp,
            "etcd",
            [
                str(binaries / "etcd"),
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            ],
        )
        _spawn(
            cp,
            "apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--cert-dir={certs}",
                f"--token-auth-file={workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                f"--audit-policy-file={workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={cp.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
            ],
        )
        _wait_ready(cp, timeout)
        write_kubeconfig(cp.kubeconfig, server, token, ca_file)
        if crd_dir is not None:
            apply_crds(make_api_client(server, token, ca_file), crd_dir)
        if controller_manager:
            _spawn(
                cp,
                "controller-manager",
                [
                    str(binaries / "kube-controller-manager"),
                    f"--kubeconfig={cp.kubeconfig}",
                    f"--authentication-kubeconfig={cp.kubeconfig}",
                    f"--authorization-kubeconfig={cp.kubeconfig}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--controllers=*,-node-lifecycle-controller,-taint-eviction-controller",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={ca_file}",
                ],
            )
    except BaseException:
        cp.stop()
        raise
    return cp
