"""A small PersistentVolume provisioner for the real node: hostPath volumes under a directory of the suite.

The node has no storage driver. Like the local-path provisioner of kind and k3s, this makes one
hostPath PV per claim of its StorageClass (the cluster's default), in a directory of its own that any
pod user may write (pods run as non-root and hostPath volumes ignore fsGroup), and binds it to the
claim; a released PV is deleted with its directory (reclaim policy Delete). It runs as a thread of the
test process, polling: claims appear a few at a time here.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from kubernetes import client

STORAGE_CLASS = "mx-e2e-hostpath"
PROVISIONER = "e2e.modelexpress.io/hostpath"


class HostPathProvisioner:
    """Binds every Pending claim of STORAGE_CLASS to a new hostPath PV under `root`."""

    def __init__(self, api: client.ApiClient, root: Path, interval: float = 0.5) -> None:
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.root = root
        self.interval = interval
        self.provisioned: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostpath-provisioner", daemon=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.create_storage_class(
            client.V1StorageClass(
                metadata=client.V1ObjectMeta(
                    name=STORAGE_CLASS, annotations={"storageclass.kubernetes.io/is-default-class": "true"}
                ),
                provisioner=PROVISIONER,
                reclaim_policy="Delete",
                volume_binding_mode="Immediate",
            )
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._bind_pending()
                self._delete_released()
            except client.ApiException:
                continue  # the next round retries; the API server may be going away at the end

    def _bind_pending(self) -> None:
        for claim in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if claim.status.phase != "Pending" or claim.spec.storage_class_name != STORAGE_CLASS:
                continue
            name = f"pv-{claim.metadata.uid}"
            directory = self.root / name
            directory.mkdir(mode=0o777, exist_ok=True)
            directory.chmod(0o777)  # any pod user writes here (mkdir's mode is masked by the umask)
            volume = client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(name=name, annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER}),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": claim.spec.resources.requests["storage"]},
                    access_modes=claim.spec.access_modes,
                    persistent_volume_reclaim_policy="Delete",
                    storage_class_name=STORAGE_CLASS,
                    host_path=client.V1HostPathVolumeSource(path=str(directory), type="Directory"),
                    claim_ref=client.V1ObjectReference(
                        kind="PersistentVolumeClaim",
                        namespace=claim.metadata.namespace,
                        name=claim.metadata.name,
                        uid=claim.metadata.uid,
                    ),
                ),
            )
            try:
                self.core.create_persistent_volume(volume)
                self.provisioned.append(name)
            except client.ApiException as exc:
                if exc.status != 409:  # made in an earlier round, not bound yet
                    raise

    def _delete_released(self) -> None:
        for volume in self.core.list_persistent_volume().items:
            if volume.spec.storage_class_name == STORAGE_CLASS and volume.status.phase == "Released":
                self.core.delete_persistent_volume(volume.metadata.name)
                shutil.rmtree(self.root / volume.metadata.name, ignore_errors=True)
