"""What a weight version is and what changed between two: identities, layout checks, deltas."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import adopt_tensors
from modelexpress.refit import changed_tensors, identity_name, layout_differences, layout_of, version_identity
from tests.helpers.manifests import build_manifest


def _manifest(version: str, tensors: dict[str, torch.Tensor], algorithm: str = "auto"):  # type: ignore[no-untyped-def]
    return build_manifest(version_identity("org/m", version), adopt_tensors(tensors), algorithm=algorithm)


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {f"layers.{i}.w": torch.randn(64, 64, generator=gen) for i in range(3)}


def test_versions_of_one_model_never_match_each_other() -> None:
    one, two = version_identity("org/m", "1"), version_identity("org/m", "2")
    assert one.layout_key() != two.layout_key()
    assert one.differences(two) == ["weights_version: '1' != '2'"]
    assert WorkerIdentity.from_proto(two.to_proto()) == two
    # the checkpoint form is the same for every rank: one identity for all of them
    assert (two.rank, two.tensor_parallel_size, two.engine) == (0, 1, "checkpoint")


def test_a_version_string_is_checked() -> None:
    with pytest.raises(ValidationError, match="weights_version"):
        version_identity("org/m", "step 1")


def test_only_tensors_whose_digest_changed_are_a_delta() -> None:
    tensors = _tensors()
    before = _manifest("1", tensors)
    assert changed_tensors(None, before) == list(tensors)
    tensors["layers.1.w"][3, 5] += 1.0
    after = _manifest("2", tensors)
    assert changed_tensors(before, after) == ["layers.1.w"]
    assert changed_tensors(after, after) == []


def test_digests_of_different_algorithms_are_never_compared() -> None:
    tensors = _tensors()
    xxh3 = _manifest("1", tensors, algorithm="xxh3-64")
    rows = _manifest("2", tensors, algorithm="row-sum-64")
    assert changed_tensors(xxh3, rows) == list(tensors)


def test_layout_differences_name_each_tensor() -> None:
    tensors = _tensors()
    held = layout_of(_manifest("1", tensors))
    assert layout_differences(held, layout_of(_manifest("2", tensors))) == []
    other = dict(tensors)
    other["layers.0.w"] = torch.zeros(32, 64)
    other["layers.2.w"] = tensors["layers.2.w"].double()
    del other["layers.1.w"]
    other["extra"] = torch.zeros(4)
    problems = layout_differences(held, layout_of(_manifest("2", other)))
    assert "layers.1.w: missing from the new version" in problems
    assert "extra: not in the model" in problems
    assert "layers.0.w: (32, 64) float32, the model has (64, 64) float32" in problems
    assert "layers.2.w: (64, 64) float64, the model has (64, 64) float32" in problems


def test_a_path_names_a_version_the_same_way_everywhere() -> None:
    assert identity_name("org/tiny-llama") == "org/tiny-llama"
    local = identity_name("/models/llama-3/")
    assert local.startswith("local/llama-3-") and local == identity_name("/models/llama-3/")
    assert identity_name("/other/llama-3") != local
    assert version_identity("/tmp/x y/_m_", "1").model_name.startswith("local/m-")
