"""ModelStreamer: runai-model-streamer reads the same tensors safetensors does, from a local directory,
a Hugging Face cache, and an S3-compatible server on 127.0.0.1 (tests/helpers/fake_s3.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelexpress.loader.streamer import ModelUriError, resolve_model_uri, stream_tensors
from tests.helpers.fake_s3 import FakeS3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("streamed")
    gen = torch.Generator().manual_seed(3)
    save_file(
        {
            "embed.weight": torch.randn(512, 96, generator=gen),
            "layers.0.attn.weight": torch.randn(96, 96, generator=gen).to(torch.bfloat16),
            "layers.0.mlp.weight": torch.randn(256, 96, generator=gen).to(torch.float8_e4m3fn),
            "layers.0.mlp.weight_scale": torch.rand(1, generator=gen),
            "layers.0.empty": torch.empty(0, 4),
        },
        str(directory / "model-00001-of-00002.safetensors"),
    )
    save_file({"lm_head.weight": torch.randn(512, 96, generator=gen).half(), "positions": torch.arange(9)},
              str(directory / "model-00002-of-00002.safetensors"))  # fmt: skip
    (directory / "config.json").write_text("{}")
    return directory


def expected(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name].view(torch.uint8), tensor.view(torch.uint8)), name


def test_local_directory_and_hub_cache(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same(dict(stream_tensors(str(model_dir))), expected(model_dir))
    # A model id resolves through HF_HUB_CACHE (refs/main -> snapshot), as on a ModelCache PVC.
    snapshot = tmp_path / "hub" / "models--org--streamed" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for path in model_dir.iterdir():
        (snapshot / path.name).symlink_to(path)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_uri("org/streamed") == str(snapshot)
    assert_same(dict(stream_tensors("org/streamed")), expected(model_dir))
    with pytest.raises(ModelUriError, match="modelexpress cache pull hf://org/absent"):
        resolve_model_uri("org/absent")
    with pytest.raises(ModelUriError, match="no such directory"):
        resolve_model_uri("/nonexistent/model")
    with pytest.raises(ModelUriError, match=r"no \*\.safetensors"):
        list(stream_tensors(str(tmp_path)))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeS3]:
    with FakeS3() as server:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        yield server


def test_s3_compatible_store(model_dir: Path, s3: FakeS3) -> None:
    s3.state.buckets["models"] = {f"llama/{p.name}": p.read_bytes() for p in model_dir.iterdir()}
    assert_same(dict(stream_tensors("s3://models/llama")), expected(model_dir))
    ranged = [r for r in s3.state.requests if r.startswith("GET /models/llama/") and "bytes=" in r]
    assert ranged, "the streamer reads object ranges"
    with pytest.raises(ModelUriError, match=r"no \*\.safetensors"):
        list(stream_tensors("s3://models/nothing-here"))
