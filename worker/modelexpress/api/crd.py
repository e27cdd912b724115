"""CustomResourceDefinitions generated from the pydantic API types.

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: `$ref`s inlined, every node
typed, `Optional[X]` written as an optional `X`, titles dropped, `additionalProperties: false`
dropped (the API server prunes and, with strict field validation, rejects unknown fields itself).
Validation (patterns, enums, bounds, CEL rules) and docstring descriptions carry over.
"""

from __future__ import annotations

import copy
from typing import Any

from modelexpress import API_GROUP, API_VERSION
from modelexpress.api.common import PATTERN_MESSAGE, KubeModel
from modelexpress.api.modelcache import ModelCache
from modelexpress.api.modelmetadata import ModelMetadata
from modelexpress.api.modelsourceslice import ModelSourceSlice

CRD_KINDS: tuple[type[KubeModel], ...] = (ModelCache, ModelMetadata, ModelSourceSlice)
_DROP = {"title", "$defs", "discriminator", "examples"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _explained_pattern(node: dict[str, Any]) -> dict[str, Any]:
    """A pattern with a message becomes a CEL rule: the API server then answers a mismatch with the
    message (`spec.source: Invalid value: ...: spec.source must be ...`) rather than the regex."""
    message = node.pop(PATTERN_MESSAGE)
    pattern = node.pop("pattern", None)
    if pattern is None:
        raise ValueError(f"{PATTERN_MESSAGE} {message!r} is set on a schema without a pattern")
    if "'" in pattern:
        raise ValueError(f"pattern {pattern!r} cannot be written as a CEL raw string (it holds a quote)")
    matches = f"self.matches(r'{pattern}')"
    # An int-or-string (a quantity) written as a number has nothing to match.
    rule = {"rule": f"type(self) == int || {matches}" if node.get("x-kubernetes-int-or-string") else matches}
    rule["message"] = message
    node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), rule]
    return node


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and any(_is_null(n) for n in any_of):
        rest = [n for n in any_of if not _is_null(n)]
        del node["anyOf"]
        if len(rest) == 1:
            merged = {**rest[0], **{k: v for k, v in node.items() if k != "default" or v is not None}}
            return _structural(merged)
        node["anyOf"] = rest
    if PATTERN_MESSAGE in node:
        node = _explained_pattern(node)
    if node.get("default", 0) is None or isinstance(node.get("default"), dict | list):
        node.pop("default")  # defaults for objects come from the nested fields' own defaults
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if "const" in node:
        node["enum"] = [node.pop("const")]
        node.setdefault("type", "string")
    out = {k: _structural(v) for k, v in node.items() if k not in _DROP}
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _structural(v) for k, v in node["properties"].items()}
    return out


def structural_schema(model: type[KubeModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic API type."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(_resolve({k: v for k, v in raw.items() if k != "$defs"}, defs))
    return schema


def _resource_schema(model: type[KubeModel]) -> dict[str, Any]:
    fields = model.model_fields
    spec_model = fields["spec"].annotation
    status_model = next(
        a for a in getattr(fields["status"].annotation, "__args__", ()) if isinstance(a, type) and a is not type(None)
    )
    assert isinstance(spec_model, type) and issubclass(spec_model, KubeModel)
    spec = structural_schema(spec_model)
    status = structural_schema(status_model)
    return {
        "type": "object",
        "description": (model.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this representation of the object.",
            },
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd_filename(model: type[KubeModel]) -> str:
    return f"{API_GROUP}_{model.PLURAL}.yaml"  # type: ignore[attr-defined]


def build_crd(model: type[KubeModel]) -> dict[str, Any]:
    """The CustomResourceDefinition of one API type."""
    kind: str = model.KIND  # type: ignore[attr-defined]
    plural: str = model.PLURAL  # type: ignore[attr-defined]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "modelexpress"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": model.SINGULAR,  # type: ignore[attr-defined]
                "shortNames": list(model.SHORT_NAMES),  # type: ignore[attr-defined]
                "categories": ["modelexpress"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(model.PRINTER_COLUMNS),  # type: ignore[attr-defined]
                    "schema": {"openAPIV3Schema": _resource_schema(model)},
                }
            ],
        },
    }
