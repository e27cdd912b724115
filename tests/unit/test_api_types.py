"""API types of the CRDs: validation in pydantic, and structural schemas that carry it to the API server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelexpress.api import (
    CRD_KINDS,
    ModelCacheSpec,
    ModelIdentity,
    ModelMetadata,
    ModelMetadataSpec,
    build_crd,
    structural_schema,
)
from modelexpress.api.common import Condition, set_condition


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, child in node.get(key, {}).items():
                out += _walk(child, f"{path}.{name}")
        if "items" in node:
            out += _walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], path + "{}")
    return out


@pytest.mark.parametrize("model", CRD_KINDS)
def test_schemas_are_structural(model: type) -> None:
    """Every node typed (or int-or-string), no $ref, no additionalProperties: false, no nullable unions."""
    schema = build_crd(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string") is True, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        assert "title" not in node, path


def test_crd_names_and_printer_columns() -> None:
    crd = build_crd(ModelMetadata)
    assert crd["metadata"]["name"] == "modelmetadatas.modelexpress.io"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["mxmeta", "mm"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:2] == ["Model", "Layout"]


def test_metadata_spec_validation() -> None:
    spec = ModelMetadataSpec.model_validate(
        {"modelName": "meta-llama/Llama-3.1-8B", "tensorParallelSize": 8, "pipelineParallelSize": 2}
    )
    assert spec.world_size == 16 and spec.layout == "TP8xPP2"
    with pytest.raises(ValidationError, match="tensorParallelSize"):
        ModelMetadataSpec.model_validate({"modelName": "m", "tensorParallelSize": 0})
    with pytest.raises(ValidationError, match="modelName"):
        ModelMetadataSpec.model_validate({"modelName": "bad name with spaces"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ModelMetadataSpec.model_validate({"modelName": "m", "tensorParalelSize": 2})


def test_cache_spec_validation() -> None:
    spec = ModelCacheSpec.model_validate({"source": "hf://Qwen/Qwen3-0.6B", "storage": {"size": "20Gi"}})
    assert spec.to_api()["storage"]["size"] == "20Gi"
    for bad in ("Qwen/Qwen3", "http://x/y", "hf://"):
        with pytest.raises(ValidationError):
            ModelCacheSpec.model_validate({"source": bad})
    with pytest.raises(ValidationError, match="not both"):
        ModelCacheSpec.model_validate({"source": "/models/x", "storage": {"size": "1Gi", "claimName": "pvc"}})
    with pytest.raises(ValidationError, match="unusedThreshold"):
        ModelCacheSpec.model_validate({"source": "/models/x", "eviction": {"unusedThreshold": "soon"}})


def test_identity_names_are_stable_dns_labels() -> None:
    a = ModelIdentity(model_name="meta-llama/Llama-3.1-8B-Instruct", tensor_parallel_size=8)
    b = ModelIdentity(model_name="meta-llama/Llama-3.1-8B-Instruct", tensor_parallel_size=4)
    assert (
        a.resource_name()
        == ModelIdentity(model_name="meta-llama/Llama-3.1-8B-Instruct", tensor_parallel_size=8).resource_name()
    )
    assert a.resource_name() != b.resource_name()
    assert len(a.resource_name()) <= 63
    assert a.resource_name().startswith("meta-llama-llama-3-1-8b-instruct-")


def test_condition_transition_time_moves_only_on_change() -> None:
    first = set_condition([], "Ready", "False", "NoSources")
    same = set_condition(first, "Ready", "False", "StillNoSources", "waiting")
    assert same[0].last_transition_time == first[0].last_transition_time
    assert same[0].reason == "StillNoSources"
    flipped = set_condition(
        [Condition.model_validate({**first[0].to_api(), "lastTransitionTime": "2020-01-01T00:00:00Z"})],
        "Ready",
        "True",
        "SourcesReady",
    )
    assert flipped[0].last_transition_time.year > 2020
    assert len(flipped) == 1


def test_status_schema_keeps_conditions_as_map() -> None:
    from modelexpress.api import ModelMetadataStatus

    status = structural_schema(ModelMetadataStatus)
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["items"]["required"] == ["type", "status", "reason", "lastTransitionTime"]


@pytest.mark.parametrize(("size", "ok"), [("200Gi", True), (1024, True), ("0.5Gi", True), ("-5Gi", False), ("0", False), (0, False), ("0Gi", False)])  # fmt: skip
def test_a_new_pvc_needs_a_positive_size(size: int | str, ok: bool) -> None:
    from pydantic import ValidationError

    from modelexpress.api.modelcache import ModelCacheStorage

    if ok:
        assert ModelCacheStorage(size=size).size == size
    else:
        with pytest.raises(ValidationError, match=r"storage\.size must be a positive quantity"):
            ModelCacheStorage(size=size)
