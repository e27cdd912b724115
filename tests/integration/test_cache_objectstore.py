"""`s3://` downloads with obstore against a local S3-compatible server (tests/helpers/fake_s3.py).

The same code path serves `gs://` and `az://` through obstore's GCS and Azure stores; only S3 has a
local server here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelexpress.cache import objectstore
from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.sources import parse_source
from tests.helpers.fake_s3 import FakeS3

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = {
    "llama/config.json": b'{"model_type": "llama"}',
    "llama/model-00001.safetensors": os.urandom(3 << 20),
    "llama/sub/tokenizer.json": b"{}",
    "other/unrelated.bin": b"x" * 10,
}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeS3]:
    with FakeS3() as server:
        server.state.buckets["models"] = dict(OBJECTS)
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        yield server


def test_cli_pulls_a_prefix_into_the_cache(tmp_path: Path, s3: FakeS3) -> None:
    env = {**os.environ, "MODEL_EXPRESS_CACHE_DIRECTORY": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
           "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / "models.db")}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "modelexpress.cli.main", "cache", "pull", "s3://models/llama", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)
    target = tmp_path / "cache" / "s3" / "models" / "llama"
    assert (row["provider"], row["path"], row["files"]) == ("s3", str(target), 3)
    for key, data in OBJECTS.items():
        if key.startswith("llama/"):
            assert (target / key.removeprefix("llama/")).read_bytes() == data
    assert not (tmp_path / "cache" / "s3" / "models" / "other").exists()
    assert "minio-secret-key" not in run.stdout + run.stderr


def test_interrupted_object_resumes_with_a_ranged_get(tmp_path: Path, s3: FakeS3) -> None:
    plan = objectstore.plan_objects(parse_source("s3://models/llama"), allow=["*.safetensors"])
    target = objectstore.target_directory(tmp_path, plan)
    target.mkdir(parents=True)
    (target / "model-00001.safetensors.incomplete").write_bytes(OBJECTS["llama/model-00001.safetensors"][: 1 << 20])
    result = objectstore.download_objects(plan, tmp_path)
    assert (result.path / "model-00001.safetensors").read_bytes() == OBJECTS["llama/model-00001.safetensors"]
    gets = [r for r in s3.state.requests if r.startswith("GET /models/llama/model-00001")]
    assert gets == [f"GET /models/llama/model-00001.safetensors bytes={1 << 20}-{(3 << 20) - 1}"]


def test_bad_bytes_and_missing_buckets_fail_with_the_reason(tmp_path: Path, s3: FakeS3) -> None:
    s3.state.corrupt.add("llama/model-00001.safetensors")
    plan = objectstore.plan_objects(parse_source("s3://models/llama"))
    with pytest.raises(DownloadError, match="MD5 differs") as bad:
        objectstore.download_objects(plan, tmp_path)
    assert bad.value.reason == FailureReason.INTEGRITY
    target = objectstore.target_directory(tmp_path, plan)
    assert not (target / "model-00001.safetensors").exists()
    assert not list(target.glob("*.incomplete"))
    with pytest.raises(DownloadError) as missing:
        objectstore.plan_objects(parse_source("s3://nobucket/llama"))
    assert missing.value.reason == FailureReason.NOT_FOUND
    with pytest.raises(DownloadError) as empty:
        objectstore.plan_objects(parse_source("s3://models/nothing-here"))
    assert empty.value.reason == FailureReason.NOT_FOUND
