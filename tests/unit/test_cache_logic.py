"""Pure logic of the local cache: source URIs, file-name safety, LRU eviction rules, directory precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelexpress.cache.database import CachedModel
from modelexpress.cache.errors import DownloadError, FailureReason
from modelexpress.cache.eviction import EvictionPolicy, plan_eviction
from modelexpress.cache.local import cache_directory
from modelexpress.cache.sources import parse_source
from modelexpress.cache.transfers import safe_name
from modelexpress.config import load_config


@pytest.mark.parametrize(
    ("text", "provider", "name"),
    [
        ("hf://meta-llama/Llama-3.1-8B", "hf", "meta-llama/Llama-3.1-8B"),
        ("Qwen/Qwen3-0.6B", "hf", "Qwen/Qwen3-0.6B"),
        ("gpt2", "hf", "gpt2"),
        ("ngc://nvidia/nemo/llama:1.0", "ngc", "nvidia/nemo/llama:1.0"),
        ("s3://models/llama/", "s3", "models/llama"),
        ("gs://bucket/a/b", "gs", "bucket/a/b"),
        ("az://container/x", "az", "container/x"),
        ("/models/llama", "local", "/models/llama"),
    ],
)
def test_sources_parse(text: str, provider: str, name: str) -> None:
    parsed = parse_source(text)
    assert (parsed.provider, parsed.name) == (provider, name)


@pytest.mark.parametrize(
    "text", ["ftp://x/y", "hf://a/b/c", "hf://../etc", "s3://Bucket_", "/models/../etc", "hf://", "s3://bucket/a\0b"]
)
def test_bad_sources_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(DownloadError) as err:
        parse_source(text)
    assert err.value.reason == FailureReason.INVALID_SOURCE


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a\\\\b", "~/.ssh/id", "", "a\0b"])
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(DownloadError, match="outside the model"):
        safe_name(name)
    assert safe_name("tokenizer/tokenizer.json") == "tokenizer/tokenizer.json"


def _model(name: str, used: float, size: int = 100, pinned: bool = False, in_use: int = 0) -> CachedModel:
    return CachedModel("hf", name, "main", "c0ffee", f"/c/{name}", size, 1, 0.0, used, pinned, in_use)


def test_eviction_is_lru_and_spares_pinned_and_in_use() -> None:
    models = [
        _model("old", used=10),
        _model("old-pinned", used=1, pinned=True),
        _model("old-in-use", used=2, in_use=1),
        _model("mid", used=500),
        _model("new", used=900),
    ]
    by_age = plan_eviction(models, EvictionPolicy(unused_threshold_secs=400), now=1000, free_bytes=10**9)
    assert [e.model.name for e in by_age] == ["old", "mid"]
    by_count = plan_eviction(models, EvictionPolicy(max_models=3), now=1000, free_bytes=10**9)
    assert [e.model.name for e in by_count] == ["old", "mid"]
    by_size = plan_eviction(models, EvictionPolicy(max_size_bytes=350), now=1000, free_bytes=10**9)
    assert [e.model.name for e in by_size] == ["old", "mid"]
    by_space = plan_eviction(models, EvictionPolicy(min_free_space_bytes=150), now=1000, free_bytes=100)
    assert [e.model.name for e in by_space] == ["old"]
    assert "min_free_space_bytes" in by_space[0].reason
    assert plan_eviction(models, EvictionPolicy(), now=1000, free_bytes=0) == []


def test_cache_directory_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MODEL_EXPRESS_CACHE_DIRECTORY", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert cache_directory(load_config(None, {})) == Path.home() / ".cache" / "huggingface" / "hub"
    assert cache_directory(load_config(None, {}), "ngc") == Path.home() / ".cache" / "ngc"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert cache_directory(load_config(None, {})) == tmp_path / "hf"
    monkeypatch.setenv("MODEL_EXPRESS_CACHE_DIRECTORY", str(tmp_path / "mx"))
    assert cache_directory(load_config(None, {})) == tmp_path / "mx"
