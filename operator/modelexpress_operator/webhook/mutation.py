"""What the admission webhook does to an opted-in pod, as a pure function of the pod and its ModelCache.

A pod annotated `modelexpress.io/p2p: enabled` gets, in its engine container (the one named by
`modelexpress.io/container`, else the first): `VLLM_PLUGINS=modelexpress`, `MODEL_EXPRESS_URL`, the
`MX_*` worker settings (the Kubernetes registry, its WorkerService port, the status TTL, the pod's
identity through the downward API), and the WorkerService port(s). With
`modelexpress.io/model-cache: NAME` it also gets a read-only mount of that ModelCache's PVC with
`HF_HUB_CACHE` pointing at it. With peer authentication on, a projected token and the settings that
make the worker check its callers; with a workers' TLS Secret, that Secret and `MX_WORKER_TLS_*`.
Anything the pod already sets is kept: the user's value wins, and a second pass changes nothing (the
webhook may be reinvoked).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from modelexpress import API_GROUP
from modelexpress.api import ModelCacheSpec
from modelexpress_operator.cachejobs import claim_name
from modelexpress_operator.workers import OPT_IN, RANKS_PER_POD, WORKER_PORT

MODEL_CACHE = f"{API_GROUP}/model-cache"
PREFER_MODEL_NODES = f"{API_GROUP}/prefer-model-nodes"
"""Names a ModelMetadata: the pod gets a *preferred* node affinity towards the nodes holding its model."""
PREFERENCE_WEIGHT = 50
MAX_PREFERRED_NODES = 64
CONTAINER = f"{API_GROUP}/container"
VOLUME = "modelexpress-cache"
PEER_TOKEN_VOLUME = "modelexpress-peer-token"
PEER_TOKEN_DIR = "/var/run/secrets/modelexpress"
PEER_TOKEN_SECONDS = 3600
TLS_VOLUME = "modelexpress-worker-tls"
TLS_DIR = "/var/run/secrets/modelexpress-worker-tls"
CACHE_MOUNT = "/modelexpress/cache"
PORT_NAME = "mx-worker"


class InjectionSettings(BaseModel):
    """What the operator injects (from its own settings)."""

    server_url: str = "modelexpress-server:8001"
    worker_port: int = Field(default=50051, ge=1, le=65535)
    status_ttl_secs: float = 30.0
    peer_trusted_user: str | None = None
    """With peer authentication: the operator's user name, admitted by every source (None: off)."""
    worker_tls_secret: str | None = None
    """A Secret with the workers' certificate, key and CA, mounted for TLS on the WorkerService (None: off)."""


class RefusedError(ValueError):
    """The pod cannot be admitted as asked; the message names the annotation and the fix."""


def opted_in(pod: dict[str, Any]) -> bool:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(OPT_IN) == "enabled"


def _annotations(pod: dict[str, Any]) -> dict[str, str]:
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod.get("spec", {}).get("containers") or []
    if not containers:
        raise RefusedError("the pod has no containers to inject into")
    wanted = _annotations(pod).get(CONTAINER)
    if wanted is None:
        return containers[0]
    for container in containers:
        if container.get("name") == wanted:
            return container
    names = ", ".join(str(c.get("name")) for c in containers)
    raise RefusedError(f"{CONTAINER}: the pod has no container {wanted!r} (it has {names})")


def _int_annotation(pod: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = _annotations(pod).get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise RefusedError(f"{key}: {raw!r} is not a number from {low} to {high}")
    return value


def cache_claim(cache: dict[str, Any]) -> str:
    """The PVC of a ModelCache: what its status says, else the one the operator uses for its spec."""
    recorded = (cache.get("status") or {}).get("claimName")
    return str(recorded or claim_name(cache["metadata"]["name"], ModelCacheSpec.model_validate(cache["spec"])))


def check(pod: dict[str, Any], namespace: str, cache: dict[str, Any] | None) -> None:
    """Raise RefusedError when the pod cannot be admitted as asked (nothing is changed)."""
    _container(pod)
    ports = _int_annotation(pod, RANKS_PER_POD, 1, 1, 64)
    _int_annotation(pod, WORKER_PORT, 50051, 1, 65535 - ports + 1)
    name = _annotations(pod).get(MODEL_CACHE)
    if name is not None and cache is None:
        raise RefusedError(
            f"{MODEL_CACHE}: ModelCache {name!r} does not exist in namespace {namespace}; create it "
            f"(kubectl apply a ModelCache named {name}) or fix the annotation"
        )


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _default_env(env: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> None:
    """Add the variables of `wanted` the container does not set itself (its own value wins)."""
    present = {e.get("name") for e in env}
    env.extend(e for e in wanted if e["name"] not in present)


def _mount(pod: dict[str, Any], container: dict[str, Any], volume: dict[str, Any], path: str) -> None:
    """The volume in the pod and mounted read-only in the container at `path`, each once (by name)."""
    volumes: list[dict[str, Any]] = pod["spec"].setdefault("volumes", [])
    if not any(v.get("name") == volume["name"] for v in volumes):
        volumes.append(volume)
    mounts: list[dict[str, Any]] = container.setdefault("volumeMounts", [])
    if not any(m.get("name") == volume["name"] for m in mounts):
        mounts.append({"name": volume["name"], "mountPath": path, "readOnly": True})


def _peer_token(pod: dict[str, Any], container: dict[str, Any], env: list[dict[str, Any]], operator: str) -> None:
    """Peer authentication: a projected token of audience `modelexpress` (rotated by the kubelet, useless
    against the API server, dead with the pod) and the settings that make the worker check its callers."""
    _default_env(env, [
        {"name": "MX_PEER_AUTH", "value": "kubernetes"},
        {"name": "MX_PEER_TRUSTED_USERS", "value": operator},
        {"name": "MX_PEER_TOKEN_FILE", "value": f"{PEER_TOKEN_DIR}/token"},
    ])  # fmt: skip
    token = {"audience": "modelexpress", "expirationSeconds": PEER_TOKEN_SECONDS, "path": "token"}
    volume = {"name": PEER_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}
    _mount(pod, container, volume, PEER_TOKEN_DIR)


def _worker_tls(pod: dict[str, Any], container: dict[str, Any], env: list[dict[str, Any]], secret: str) -> None:
    """TLS on the WorkerService: the Secret's certificate and key to serve with, its CA to verify peers."""
    _default_env(env, [
        {"name": "MX_WORKER_TLS_CERT_FILE", "value": f"{TLS_DIR}/tls.crt"},
        {"name": "MX_WORKER_TLS_KEY_FILE", "value": f"{TLS_DIR}/tls.key"},
        {"name": "MX_WORKER_TLS_CA_FILE", "value": f"{TLS_DIR}/ca.crt"},
    ])  # fmt: skip
    # the kubelet's default file mode: engines run as any user, and an fsGroup is not a given
    _mount(pod, container, {"name": TLS_VOLUME, "secret": {"secretName": secret}}, TLS_DIR)


def prefer_nodes(pod: dict[str, Any], nodes: list[str]) -> None:
    """Add a preferred (never required) node affinity towards `nodes` (by hostname label), once: the
    scheduler weighs it with everything else, so a full node never blocks the pod."""
    if not nodes:
        return
    term = {
        "weight": PREFERENCE_WEIGHT,
        "preference": {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": sorted(nodes)[:MAX_PREFERRED_NODES]}
            ]
        },
    }
    affinity = pod["spec"].setdefault("affinity", {}).setdefault("nodeAffinity", {})
    preferred: list[dict[str, Any]] = affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
    if term not in preferred:
        preferred.append(term)


def mutate(
    pod: dict[str, Any], cache: dict[str, Any] | None, settings: InjectionSettings, nodes: list[str] | None = None
) -> None:
    """Inject into `pod` in place (call `check` first). Idempotent; the pod's own values win. `nodes`:
    where its model already is (with the `prefer-model-nodes` annotation)."""
    container = _container(pod)
    ranks = _int_annotation(pod, RANKS_PER_POD, 1, 1, 64)
    port = _int_annotation(pod, WORKER_PORT, settings.worker_port, 1, 65535 - ranks + 1)
    env: list[dict[str, Any]] = container.setdefault("env", [])
    wanted: list[dict[str, Any]] = [
        {"name": "VLLM_PLUGINS", "value": "modelexpress"},
        {"name": "MODEL_EXPRESS_URL", "value": settings.server_url},
        {"name": "MX_METADATA_BACKEND", "value": "kubernetes"},
        {"name": "MX_WORKER_GRPC_PORT", "value": str(port)},
        {"name": "MX_STATUS_TTL_SECS", "value": str(int(settings.status_ttl_secs))},
        _field_env("MX_POD_NAME", "metadata.name"),
        _field_env("MX_POD_UID", "metadata.uid"),
        _field_env("MX_POD_NAMESPACE", "metadata.namespace"),
        _field_env("MX_NODE_NAME", "spec.nodeName"),
        # Set where the cluster copies the node's zone onto the pod at binding (Kubernetes 1.35+,
        # PodTopologyLabels); empty elsewhere, and the worker reads the operator's topology ConfigMap.
        _field_env("MX_ZONE", "metadata.labels['topology.kubernetes.io/zone']"),
        _field_env("MX_WORKER_HOST", "status.podIP"),
    ]
    if cache is not None:
        wanted.append({"name": "HF_HUB_CACHE", "value": CACHE_MOUNT})
    _default_env(env, wanted)

    ports: list[dict[str, Any]] = container.setdefault("ports", [])
    taken = {p.get("containerPort") for p in ports}
    for rank in range(ranks):
        number = port + rank
        if number not in taken:
            name = PORT_NAME if rank == 0 else f"mx-worker-{rank}"
            ports.append({"name": name[:15], "containerPort": number, "protocol": "TCP"})

    prefer_nodes(pod, nodes or [])
    # A label too, where the annotation cannot be selected on: the chart's NetworkPolicy selects opted-in pods.
    pod.setdefault("metadata", {}).setdefault("labels", {}).setdefault(OPT_IN, "enabled")
    if settings.peer_trusted_user is not None:
        _peer_token(pod, container, env, settings.peer_trusted_user)
    if settings.worker_tls_secret is not None:
        _worker_tls(pod, container, env, settings.worker_tls_secret)
    if cache is not None:
        claim = {"claimName": cache_claim(cache), "readOnly": True}
        _mount(pod, container, {"name": VOLUME, "persistentVolumeClaim": claim}, CACHE_MOUNT)
