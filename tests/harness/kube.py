"""Kubernetes clients and helpers for tests: clients per identity, CRD install, waits with deadlines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from modelexpress.api.modelsourceslice import metadata_selector

T = TypeVar("T")
__all__ = [
    "apply_crds",
    "condition",
    "get_table",
    "make_api_client",
    "service_account_token",
    "wait_for",
    "write_kubeconfig",
]


def write_kubeconfig(path: Path, server: str, token: str, ca_file: Path | None, user: str = "admin") -> Path:
    """A kubeconfig with one bearer-token user (admin or a ServiceAccount)."""
    cluster = f'certificate-authority: "{ca_file}"' if ca_file else "insecure-skip-tls-verify: true"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: local, cluster: {{server: "{server}", {cluster}}}}}]\n'
        f'users: [{{name: {user}, user: {{token: "{token}"}}}}]\n'
        f"contexts: [{{name: local, context: {{cluster: local, user: {user}}}}}]\n"
        "current-context: local\n"
    )
    path.chmod(0o600)
    return path


def make_api_client(server: str, token: str, ca_file: Path | None) -> client.ApiClient:
    """A `kubernetes` client for one bearer token, verifying the API server's certificate."""
    config = client.Configuration()
    config.host = server
    # "BearerToken" since kubernetes 36; "authorization" before it.
    config.api_key = {"BearerToken": token, "authorization": token}
    config.api_key_prefix = {"BearerToken": "Bearer", "authorization": "Bearer"}
    if ca_file is not None:
        config.ssl_ca_cert = str(ca_file)
    else:
        config.verify_ssl = False
    return client.ApiClient(config)


def wait_for(probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.1, what: str = "condition") -> T:
    """Call `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def apply_crds(api: client.ApiClient, crd_dir: Path, timeout: float = 30) -> list[str]:
    """Create (or replace) every CRD in `crd_dir` and wait until each is Established."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(crd_dir.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        try:
            current = ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(body)
        names.append(name)

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        wait_for(lambda n=name: established(n), timeout, what=f"CRD {name} Established")  # type: ignore[misc]
    return names


def read_or_none(read: Callable[..., T], *args: Any) -> T | None:
    """`read(*args)`, or None when the API server answers 404 (any other error is raised)."""
    try:
        return read(*args)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of `type_` in an object's status, if any."""
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry.get("type") == type_:
            return dict(entry)
    return None


def service_account_token(api: client.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """A bound token of a ServiceAccount (TokenRequest API), as a pod would mount it."""
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    response = core.create_namespaced_service_account_token(name, namespace, request)
    token: str = response.status.token
    return token


def get_table(api: client.ApiClient, path: str) -> dict[str, Any]:
    """GET `path` as a meta.k8s.io Table: what `kubectl get` prints, printer columns included."""
    config = api.configuration
    headers = {
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        "Authorization": config.get_api_key_with_prefix("BearerToken", alias="authorization"),
    }
    # The REST layer below the generated API: its signature is the same in kubernetes 31..37.
    response = api.rest_client.request("GET", config.host + path, headers=headers)
    if getattr(response, "data", None) is None:
        response.read()
    table: dict[str, Any] = json.loads(response.data)
    return table


def recorded_slices(custom: client.CustomObjectsApi, namespace: str, metadata: str) -> list[dict[str, Any]]:
    """The ModelSourceSlices the operator keeps for ModelMetadata `metadata` (selected as it selects them)."""
    listed = custom.list_namespaced_custom_object(
        "modelexpress.io",
        "v1alpha1",
        namespace,
        "modelsourceslices",
        label_selector=metadata_selector(metadata),
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def recorded_sources(custom: client.CustomObjectsApi, namespace: str, metadata: str) -> list[dict[str, Any]]:
    """Every source entry the operator recorded for ModelMetadata `metadata`, across its ModelSourceSlices."""
    return [
        s
        for item in recorded_slices(custom, namespace, metadata)
        for s in (item.get("status") or {}).get("sources") or []
    ]


def create_slice(
    custom: client.CustomObjectsApi, namespace: str, metadata: str, identity_hash: str, rank: int, index: int = 0
) -> str:
    """An empty ModelSourceSlice of ModelMetadata `metadata`, labelled and named as the operator makes slice
    number `index` of rank `rank`; its name."""
    name = f"{metadata}-r{rank}-s{index}"
    labels = {"modelexpress.io/model-metadata": metadata, "modelexpress.io/identity": identity_hash,
              "modelexpress.io/rank": str(rank)}  # fmt: skip
    body = {"apiVersion": "modelexpress.io/v1alpha1", "kind": "ModelSourceSlice",
            "metadata": {"name": name, "labels": labels}, "spec": {"modelMetadata": metadata, "rank": rank}}  # fmt: skip
    custom.create_namespaced_custom_object("modelexpress.io", "v1alpha1", namespace, "modelsourceslices", body)
    return name


def write_slice(
    custom: client.CustomObjectsApi,
    namespace: str,
    metadata: str,
    identity_hash: str,
    sources: list[dict[str, Any]],
) -> str:
    """A ModelSourceSlice of ModelMetadata `metadata` holding `sources` (all of one rank; 0 when none), as the
    operator writes the first slice of that rank (for tests that need recorded entries without an
    operator); its name."""
    ranks = {source["rank"] for source in sources} or {0}
    assert len(ranks) == 1, f"a slice holds entries of one rank, not {sorted(ranks)}"
    name = create_slice(custom, namespace, metadata, identity_hash, ranks.pop())
    custom.patch_namespaced_custom_object_status(
        "modelexpress.io", "v1alpha1", namespace, "modelsourceslices", name,
        {"status": {"sources": sources, "sourceCount": len(sources)}},
    )  # fmt: skip
    return name
