"""Render and check the Helm chart without a helm binary: `make chart` (or `python hack/chart.py`).

Helm's own Go engine (helm-python-sdk) renders the templates with the given values, enforcing
values.schema.json as `helm install` does; every object rendered is then validated strictly against
the Kubernetes 1.36 schemas (kubernetes-validate). The manifests go to stdout (or `--output`), so
`python hack/chart.py -f my-values.yaml | kubectl apply --dry-run=server -f -` works too. Anything
wrong ends in one `error:` line and exit status 2. The tests render through the same functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "modelexpress"
KUBERNETES_VERSION = "1.36.0"
# Kinds outside the Kubernetes API the chart may render, and the API group each needs.
CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com",
    "PodMonitor": "monitoring.coreos.com",
    "PrometheusRule": "monitoring.coreos.com",
    "Issuer": "cert-manager.io",
    "Certificate": "cert-manager.io",
    "KopfPeering": "kopf.dev",
    "ClusterKopfPeering": "kopf.dev",
}


class ChartError(Exception):
    """Values the chart refuses, or an object it renders that Kubernetes would refuse."""


def render(values: dict[str, Any], namespace: str = "mx-system", release: str = "modelexpress") -> list[dict[str, Any]]:
    """`helm template` of the chart: every rendered object (hooks excluded), values checked by the schema."""
    import helm_python

    with helm_python.Config(namespace=namespace, storage_driver="memory") as config:
        try:
            result = config.install(str(CHART), release, values, dry_run="client")
        except Exception as exc:  # Helm's errors arrive as one exception type per binding version
            raise ChartError(" ".join(str(exc).split())) from None
    return [doc for doc in yaml.safe_load_all(result["manifest"]) if doc]


def validate(doc: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Strict schema validation of a built-in kind; custom kinds must be ones the chart is meant to render."""
    import kubernetes_validate

    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
    if kind in CUSTOM_KINDS:
        if doc["apiVersion"].split("/")[0] != CUSTOM_KINDS[kind]:
            raise ChartError(f"{kind} {name}: apiVersion {doc['apiVersion']} is not {CUSTOM_KINDS[kind]}")
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ChartError(f"{kind} {name}: no schema to validate it ({exc})") from None
    except kubernetes_validate.ValidationError as exc:
        raise ChartError(f"{kind} {name}: {exc.message}") from None


def _set(values: dict[str, Any], assignment: str) -> None:
    """`--set a.b=c` as Helm reads it, for scalars (YAML-typed: 3 is a number, true a boolean)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ChartError(f"--set {assignment!r}: expected KEY=VALUE, e.g. operator.replicas=3")
    node = values
    *parents, leaf = path.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ChartError(f"--set {assignment!r}: {key} is not a map")
        node = child
    node[leaf] = yaml.safe_load(raw) if raw else ""


def _merge(into: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--values", action="append", type=Path, default=[], help="a values file (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE (repeatable)")
    parser.add_argument("-n", "--namespace", default="mx-system", help="the release namespace (default mx-system)")
    parser.add_argument("--release", default="modelexpress", help="the release name (default modelexpress)")
    parser.add_argument("-o", "--output", type=Path, help="write the manifests here instead of stdout")
    args = parser.parse_args(argv)
    try:
        values: dict[str, Any] = {}
        for path in args.values:
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ChartError(f"-f {path}: {' '.join(str(exc).split())}") from None
            if not isinstance(loaded, dict):
                raise ChartError(f"-f {path}: a values file is a YAML map")
            _merge(values, loaded)
        for assignment in args.set:
            _set(values, assignment)
        docs = render(values, args.namespace, args.release)
        for doc in docs:
            validate(doc)
    except ChartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = yaml.safe_dump_all(docs, sort_keys=False)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    kinds = sorted({doc["kind"] for doc in docs})
    print(f"rendered {len(docs)} objects ({', '.join(kinds)}), each valid for Kubernetes {KUBERNETES_VERSION}",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
