"""How the operator sizes a ModelCache's PVC when no storage.size is given: itself for a public hub
repository, a sizing Job (with the credentials) for anything else, and each failure keeps its reason."""

from __future__ import annotations

import pytest

from modelexpress.api import ModelCacheSpec
from modelexpress.cache.errors import DownloadError
from modelexpress_operator.cachejobs import is_sizing_job, sizing_job_manifest
from modelexpress_operator.caches.refusals import Refused
from modelexpress_operator.caches.sizing import NeedsSizingJob, source_size
from modelexpress_operator.settings import OperatorSettings
from tests.harness.processes import free_port
from tests.helpers.fake_hub import FakeHub


def _size(endpoint: str, spec: ModelCacheSpec) -> int | NeedsSizingJob:
    return source_size(spec, OperatorSettings(hf_endpoint=endpoint))


def _spec(**fields: object) -> ModelCacheSpec:
    return ModelCacheSpec.model_validate({"source": "hf://org/private", **fields})


def test_public_repository_is_sized_by_the_operator_and_private_ones_by_a_job() -> None:
    with FakeHub() as hub:
        hub.add("org/public", {"config.json": b"{}", "model.safetensors": b"x" * 1000})
        hub.add("org/private", {"config.json": b"{}"}, token="hf_secret")
        assert _size(hub.endpoint, _spec(source="hf://org/public")) == 1002
        private = _size(hub.endpoint, _spec(credentialsSecretRef={"name": "hf-token"}))
        assert isinstance(private, NeedsSizingJob) and "read with Secret hf-token" in private.why
        with pytest.raises(DownloadError) as refused:  # no credentials: say so, not "size unknown"
            _size(hub.endpoint, _spec())
        assert refused.value.reason.value == "Unauthorized" and "credentialsSecretRef" in str(refused.value)
        assert str(refused.value).count("does not exist") == 0  # one cause, said once
        with pytest.raises(DownloadError) as missing:
            _size(hub.endpoint, _spec(source="hf://org/nope"))
        assert missing.value.reason.value in ("NotFound", "Unauthorized")


def test_object_stores_and_ngc_are_sized_by_a_job() -> None:
    for source in ("s3://bucket/llama", "gs://bucket/llama", "ngc://nvidia/team/model:1.0"):
        assert isinstance(_size("http://127.0.0.1:9", _spec(source=source)), NeedsSizingJob)


def test_an_unreachable_hub_keeps_its_reason_and_is_retried() -> None:
    with pytest.raises(Refused) as waiting:
        _size(f"http://127.0.0.1:{free_port()}", _spec(source="hf://org/public"))
    reason, message = waiting.value.args
    assert reason == "NetworkError" and "retried" in message and "spec.storage.size" in message


def test_sizing_job_reads_the_source_only() -> None:
    spec = _spec(credentialsSecretRef={"name": "hf-token"}, allowPatterns=["*.safetensors"])
    job = sizing_job_manifest("llama", "uid-1", spec, OperatorSettings(), "llama-size-g1-1")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["cache", "size", "hf://org/private"]
    assert container["args"][5:7] == ["--allow-pattern", "*.safetensors"]
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert pod["automountServiceAccountToken"] is False  # no API access: the size travels in the termination log
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"] == "size"
    assert is_sizing_job(job)
