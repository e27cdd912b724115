"""Rendering the chart with Helm's own engine (helm-python-sdk) and validating what it renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelexpress"
VALUES_FILES = ["values.yaml", "values-development.yaml", "values-production.yaml", "values-local-storage.yaml"]
# Kinds outside the Kubernetes API the chart may render, and the CRD group each needs.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com",
    "Issuer": "cert-manager.io",
    "Certificate": "cert-manager.io",
    "KopfPeering": "kopf.dev",
    "ClusterKopfPeering": "kopf.dev",
}


def render(values: dict[str, Any], namespace: str = "mx-system", release: str = "modelexpress") -> list[dict[str, Any]]:
    """`helm template` of the chart: every rendered object (hooks excluded), values checked by the schema."""
    import helm_python

    with helm_python.Config(namespace=namespace, storage_driver="memory") as config:
        result = config.install(str(CHART), release, values, dry_run="client")
    return [doc for doc in yaml.safe_load_all(result["manifest"]) if doc]


def values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / name).read_text()) or {}
    return loaded


def validate(doc: dict[str, Any], version: str = "1.36.0") -> None:
    """Strict schema validation of a built-in kind; custom kinds must be ones the chart is meant to render."""
    import kubernetes_validate

    kind = doc["kind"]
    if kind in CUSTOM_KINDS:
        assert doc["apiVersion"].split("/")[0] == CUSTOM_KINDS[kind], doc["apiVersion"]
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(f"{kind} {doc['metadata'].get('name')}: no schema to validate it ({exc})") from None
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{kind} {doc['metadata'].get('name')}: {exc.message}") from None
