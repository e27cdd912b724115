"""A node helper that plays the kubelet for tests: the control plane has no scheduler and no kubelet.

It binds pods to a Node object it registers, moves them through Running to Succeeded/Failed with
the conditions, pod IP and container statuses a kubelet reports, and can run a pod's container
command as a local process with the pod's environment, returning its exit code and logs.

Volumes are emulated with local directories: a PVC is `ROOT/pvc/NAMESPACE/CLAIM`, an emptyDir is per
pod, configMap and secret volumes are written out as files. Because a local process cannot see the
container's mount paths, every mount path that appears in the command, args, env values or
workingDir is rewritten to its local directory. A pod whose ServiceAccount token is mounted gets
`KUBECONFIG` pointing at a kubeconfig holding a bound token of that ServiceAccount, so code in the
pod talks to the API server with the pod's identity, as in-cluster configuration would.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.harness.kube import service_account_token, wait_for, write_kubeconfig

_MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class PodRun:
    """What running a pod's container produced."""

    pod: str
    exit_code: int
    stdout: str
    stderr: str


class ContainerConfigError(RuntimeError):
    """The kubelet cannot start the container: a Secret or ConfigMap it reads is missing (reported on the pod)."""


def _stopped_containers(pod: client.V1Pod, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The container statuses a kubelet reports for containers not running (waiting or terminated)."""
    return [
        {"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0, "started": False,
         "state": state}
        for c in pod.spec.containers
    ]  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeHelper:
    """Plays the kubelet of one node for pods of the tests' choosing."""

    _ips = itertools.count(2)

    def __init__(
        self,
        api: client.ApiClient,
        root: Path,
        server: str,
        ca_file: Path | None,
        name: str = "node-1",
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.root = root
        self.server = server
        self.ca_file = ca_file
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.ensure_node()

    # --- node -----------------------------------------------------------------------------------

    def ensure_node(self) -> None:
        """Register the Node object (Ready) so bound pods are not garbage-collected as orphans."""
        try:
            self.core.read_node(self.name)
            return
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        self.core.create_node(
            {
                "metadata": {
                    "name": self.name,
                    "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux"},
                }
            }
        )
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
        self.core.patch_node_status(
            self.name,
            {
                "status": {
                    "capacity": capacity,
                    "allocatable": capacity,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "played by the test node helper",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                }
            },
            _content_type=_MERGE_PATCH,
        )

    # --- pod lifecycle --------------------------------------------------------------------------

    def bind(self, namespace: str, pod: str) -> client.V1Pod:
        """Bind the pod to this node (what the scheduler does), unless it already has a node."""
        current = self.core.read_namespaced_pod(pod, namespace)
        if not current.spec.node_name:
            body = client.V1Binding(
                metadata=client.V1ObjectMeta(name=pod),
                target=client.V1ObjectReference(api_version="v1", kind="Node", name=self.name),
            )
            # The client cannot deserialize the Binding it gets back; the call itself is what matters.
            self.core.create_namespaced_pod_binding(pod, namespace, body, _preload_content=False)
            current = self.core.read_namespaced_pod(pod, namespace)
        return current

    def mark_running(self, namespace: str, pod: str, ip: str | None = None, ready: bool = True) -> str:
        """Report the pod Running (and Ready) with a pod IP; returns the IP."""
        current = self.bind(namespace, pod)
        ip = ip or (
            current.status.pod_ip
            if current.status and current.status.pod_ip
            else f"10.244.0.{next(self._ips) % 250 + 2}"
        )
        now = _now()
        ready_status = "True" if ready else "False"
        statuses = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": now}},
            }
            for c in current.spec.containers
        ]
        self._patch_status(
            namespace,
            pod,
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "conditions": self._conditions(scheduled=True, initialized=True, ready=ready_status, now=now),
                "containerStatuses": statuses,
            },
        )
        return ip

    def mark_not_ready(self, namespace: str, pod: str) -> None:
        """Report the pod's readiness probe failing (still Running)."""
        self.mark_running(namespace, pod, ready=False)

    def mark_terminated(self, namespace: str, pod: str, exit_code: int, message: str = "") -> None:
        """Report the container exited: Succeeded on 0, Failed otherwise."""
        current = self.bind(namespace, pod)
        now = _now()
        reason = "Completed" if exit_code == 0 else "Error"
        started = now
        for status in (current.status.container_statuses or []) if current.status else []:
            if status.state and status.state.running and status.state.running.started_at:
                started = status.state.running.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        terminated = {"exitCode": exit_code, "reason": reason, "message": message[-4096:], "startedAt": started,
                      "finishedAt": now}  # fmt: skip
        statuses = _stopped_containers(current, {"terminated": terminated})
        self._patch_status(
            namespace,
            pod,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": self._conditions(
                    scheduled=True, initialized=True, ready="False", now=now, completed=True
                ),
                "containerStatuses": statuses,
            },
        )

    def mark_config_error(self, namespace: str, pod: str, message: str) -> None:
        """Report what a kubelet reports when a container's Secret or ConfigMap is missing: the pod stays
        Pending, its container waiting with CreateContainerConfigError (retried once the object exists)."""
        current = self.bind(namespace, pod)
        now = _now()
        statuses = _stopped_containers(
            current, {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
        )
        self._patch_status(
            namespace,
            pod,
            {
                "phase": "Pending",
                "conditions": self._conditions(scheduled=True, initialized=True, ready="False", now=now),
                "containerStatuses": statuses,
            },
        )

    def _missing_config(self, namespace: str, container: client.V1Container) -> str | None:
        """The kubelet's message for the first non-optional Secret the container's environment names
        that does not exist, else None."""
        names = [s.secret_ref.name for s in container.env_from or [] if s.secret_ref and not s.secret_ref.optional]
        names += [
            v.value_from.secret_key_ref.name
            for v in container.env or []
            if v.value_from and v.value_from.secret_key_ref and not v.value_from.secret_key_ref.optional
        ]
        for name in names:
            try:
                self.core.read_namespaced_secret(name, namespace)
            except client.ApiException as exc:
                if exc.status == 404:
                    return f'secret "{name}" not found'
                raise
        return None

    def _conditions(
        self, scheduled: bool, initialized: bool, ready: str, now: str, completed: bool = False
    ) -> list[dict[str, Any]]:
        reason = {"reason": "PodCompleted"} if completed else {}
        return [
            {"type": "PodScheduled", "status": "True" if scheduled else "False", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True" if initialized else "False", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now, **reason},
            {"type": "Ready", "status": ready, "lastTransitionTime": now, **reason},
        ]

    def _patch_status(self, namespace: str, pod: str, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod, namespace, {"status": status}, _content_type=_MERGE_PATCH)

    # --- running containers ---------------------------------------------------------------------

    def run_pod(self, namespace: str, pod: str, timeout: float = 120, container: str | None = None) -> PodRun:
        """Run the pod's (first or named) container command locally and report its exit to the API server."""
        current = self.bind(namespace, pod)
        spec = next(c for c in current.spec.containers if container in (None, c.name))
        if not spec.command:
            raise ValueError(
                f"pod {namespace}/{pod}: container {spec.name} has no command; the node helper cannot run an image entrypoint"
            )
        missing = self._missing_config(namespace, spec)
        if missing:
            self.mark_config_error(namespace, pod, missing)
            raise ContainerConfigError(f"pod {namespace}/{pod}: {missing}")
        mounts = self._prepare_volumes(namespace, current)
        # The kubelet gives each container a file at terminationMessagePath and reports what it
        # holds on exit; here it is a file of the pod's directory, the path rewritten like a mount.
        termination_log = self._pod_dir(current) / f"termination-log-{spec.name}"
        termination_log.write_text("")
        mounts[spec.termination_message_path or "/dev/termination-log"] = termination_log
        env = self._environment(namespace, current, spec, mounts)
        argv = [self._translate(part, mounts) for part in [*spec.command, *(spec.args or [])]]
        workdir = Path(self._translate(spec.working_dir, mounts)) if spec.working_dir else self._pod_dir(current)
        workdir.mkdir(parents=True, exist_ok=True)
        self.mark_running(namespace, pod)
        try:
            proc = subprocess.run(
                argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
            )
            result = PodRun(pod, proc.returncode, proc.stdout, proc.stderr)
        except subprocess.TimeoutExpired as exc:
            result = PodRun(pod, 137, str(exc.stdout or ""), f"killed after {timeout}s: {exc.stderr or ''}")
        except FileNotFoundError as exc:
            result = PodRun(pod, 127, "", f"executable not found: {exc.filename}")
        (self._pod_dir(current) / "stdout.log").write_text(result.stdout)
        (self._pod_dir(current) / "stderr.log").write_text(result.stderr)
        message = termination_log.read_text(errors="replace").strip()[-4096:] or result.stderr.strip()[-1024:]
        self.mark_terminated(namespace, pod, result.exit_code, message)
        return result

    def job_pods(self, namespace: str, job: str) -> list[client.V1Pod]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}").items
        return sorted(pods, key=lambda p: p.metadata.creation_timestamp)

    def run_job_pod(self, namespace: str, job: str, timeout: float = 120, wait: float = 30) -> PodRun:
        """Wait for the Job controller to create a pod that has not run yet, and run it."""

        def pending() -> client.V1Pod | None:
            for pod in self.job_pods(namespace, job):
                if pod.metadata.deletion_timestamp is None and (pod.status.phase or "Pending") == "Pending":
                    return pod
            return None

        pod = wait_for(pending, wait, what=f"a pending pod of job {namespace}/{job}")
        return self.run_pod(namespace, pod.metadata.name, timeout)

    # --- volumes and environment ----------------------------------------------------------------

    def _pod_dir(self, pod: client.V1Pod) -> Path:
        path = self.root / "pods" / pod.metadata.uid
        path.mkdir(parents=True, exist_ok=True)
        return path

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The local directory standing in for a PVC's volume."""
        path = self.root / "pvc" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _prepare_volumes(self, namespace: str, pod: client.V1Pod) -> dict[str, Path]:
        volumes: dict[str, Path] = {}
        for volume in pod.spec.volumes or []:
            local = self._pod_dir(pod) / "volumes" / volume.name
            if volume.persistent_volume_claim:
                local = self.claim_dir(namespace, volume.persistent_volume_claim.claim_name)
            elif volume.config_map:
                data = self.core.read_namespaced_config_map(volume.config_map.name, namespace).data or {}
                self._write_files(local, {k: v.encode() for k, v in data.items()})
            elif volume.secret:
                data = self.core.read_namespaced_secret(volume.secret.secret_name, namespace).data or {}
                self._write_files(local, {k: base64.b64decode(v) for k, v in data.items()})
            elif volume.host_path:
                local = Path(volume.host_path.path)
            local.mkdir(parents=True, exist_ok=True)
            volumes[volume.name] = local
        container_mounts: dict[str, Path] = {}
        for container in pod.spec.containers:
            for mount in container.volume_mounts or []:
                if mount.name in volumes:
                    container_mounts[mount.mount_path] = volumes[mount.name] / (mount.sub_path or "")
        return container_mounts

    @staticmethod
    def _write_files(directory: Path, files: dict[str, bytes]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in files.items():
            (directory / key).write_bytes(value)

    @staticmethod
    def _translate(value: str, mounts: dict[str, Path]) -> str:
        # One pass over every mount path (longest first): a local directory that itself lies under a
        # mount path (the pod's files under /tmp, with an emptyDir at /tmp) is not rewritten twice.
        if not mounts:
            return value
        local = {mount_path.rstrip("/"): str(path) for mount_path, path in mounts.items()}
        choices = "|".join(re.escape(m) for m in sorted(local, key=len, reverse=True))
        pattern = rf"(?<![\w.-])({choices})(?=/|$|[\s:=,;])"
        return re.sub(pattern, lambda match: local[match.group(1)], value)

    def _field(self, pod: client.V1Pod, path: str) -> str:
        simple = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": self.name,
            "spec.serviceAccountName": pod.spec.service_account_name or "default",
            "status.hostIP": "127.0.0.1",
            "status.podIP": (pod.status.pod_ip if pod.status else None) or "",
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            source = pod.metadata.labels if match.group(1) == "labels" else pod.metadata.annotations
            return str((source or {}).get(match.group(2), ""))
        raise ValueError(f"fieldRef {path} is not supported by the node helper")

    def _environment(
        self, namespace: str, pod: client.V1Pod, container: client.V1Container, mounts: dict[str, Path]
    ) -> dict[str, str]:
        # What the node itself provides is a path on this machine already: never rewritten as a mount
        # (the checkout may live under a path that a pod mounts, such as /tmp).
        base: dict[str, str] = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "HOME": str(self._pod_dir(pod)),
            "HOSTNAME": pod.metadata.name,
            "LANG": "C.UTF-8",
        }
        env: dict[str, str] = {}
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref:
                data = self.core.read_namespaced_config_map(source.config_map_ref.name, namespace).data or {}
                env.update({prefix + k: v for k, v in data.items()})
            if source.secret_ref:
                data = self.core.read_namespaced_secret(source.secret_ref.name, namespace).data or {}
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in data.items()})
        for var in container.env or []:
            if var.value_from is None:
                known = {**base, **env}
                env[var.name] = re.sub(
                    r"\$\((\w+)\)", lambda m, known=known: known.get(m.group(1), m.group(0)), var.value or ""
                )
            elif var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                data = self.core.read_namespaced_secret(ref.name, namespace).data or {}
                env[var.name] = base64.b64decode(data[ref.key]).decode()
            elif var.value_from.config_map_key_ref:
                ref = var.value_from.config_map_key_ref
                env[var.name] = (self.core.read_namespaced_config_map(ref.name, namespace).data or {})[ref.key]
            elif var.value_from.field_ref:
                env[var.name] = self._field(pod, var.value_from.field_ref.field_path)
        translated = {**base, **{k: self._translate(v, mounts) for k, v in env.items()}}
        if pod.spec.automount_service_account_token is not False:
            sa = pod.spec.service_account_name or "default"
            token = service_account_token(self.api, namespace, sa)
            kubeconfig = write_kubeconfig(self._pod_dir(pod) / "kubeconfig", self.server, token, self.ca_file, user=sa)
            translated["KUBECONFIG"] = str(kubeconfig)
            translated["POD_NAMESPACE"] = translated.get("POD_NAMESPACE", namespace)
        return translated
