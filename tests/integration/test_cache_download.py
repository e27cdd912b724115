"""Model downloads into the local cache from a real HTTP server speaking the Hugging Face Hub API.

`tests/helpers/fake_hub.py` serves the hub's model-info and resolve endpoints on 127.0.0.1; the real
huggingface_hub client talks to it through `HF_ENDPOINT`. The CLI runs as a subprocess, as a user
(or a cache Job) would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from modelexpress.cache import huggingface
from modelexpress.cache.database import CacheDatabase
from modelexpress.cache.errors import DownloadError, FailureReason
from tests.helpers.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "model-00001-of-00002.safetensors": os.urandom(3 << 20),
    "model-00002-of-00002.safetensors": os.urandom(2 << 20),
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    "README.md": b"# tiny",
}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add("org/tiny", FILES)
        yield server


def cli(tmp_path: Path, hub: FakeHub, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "MODEL_EXPRESS_DATABASE_PATH": str(tmp_path / "models.db"),
        "PYTHONPATH": str(ROOT),
        **env,
    }
    environment.pop("HF_TOKEN", None) if "HF_TOKEN" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "modelexpress.cli.main", "cache", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pull_fills_the_hub_cache_that_readers_use_offline(tmp_path: Path, hub: FakeHub) -> None:
    run = cli(tmp_path, hub, "pull", "hf://org/tiny", "--ignore-pattern", "*.md", "--format", "json")
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)
    commit = hub.state.repos["org/tiny"].commit
    assert (row["provider"], row["name"], row["resolved_revision"]) == ("hf", "org/tiny", commit)
    assert row["files"] == 4 and row["size_bytes"] == sum(len(v) for k, v in FILES.items() if k != "README.md")
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / commit
    assert row["path"] == str(snapshot)
    for name in FILES:
        assert (snapshot / name).exists() == (name != "README.md")
    # A reader with no network (vLLM with HF_HUB_OFFLINE) resolves `main` through refs/ and reads the bytes.
    offline = hf_hub_download(
        "org/tiny", "model-00002-of-00002.safetensors", cache_dir=tmp_path / "hub", local_files_only=True
    )
    assert Path(offline).read_bytes() == FILES["model-00002-of-00002.safetensors"]
    assert not list((tmp_path / "hub").rglob("*.incomplete"))
    # Recorded in the database, listed by `cache ls`; a second pull downloads nothing.
    listed = json.loads(cli(tmp_path, hub, "ls", "--format", "json").stdout)
    assert [(m["name"], m["revision"]) for m in listed] == [("org/tiny", "main")]
    before = len(hub.state.requests)
    assert cli(tmp_path, hub, "pull", "org/tiny", "--ignore-pattern", "*.md").returncode == 0
    assert not [r for r in hub.state.requests[before:] if r.startswith("GET /org/tiny/resolve")]


def test_interrupted_download_resumes_from_the_partial_blob(tmp_path: Path, hub: FakeHub) -> None:
    name = "model-00001-of-00002.safetensors"
    plan = huggingface.plan_download("org/tiny", endpoint=hub.endpoint)
    # A previous process died after 1 MiB: its partial blob is still there under the temporary name.
    blobs = tmp_path / "hub" / "models--org--tiny" / "blobs"
    blobs.mkdir(parents=True)
    etag = hub.state.repos["org/tiny"].etag(name)
    (blobs / f"{etag}.incomplete").write_bytes(FILES[name][: 1 << 20])
    # And this time the connection drops once more, mid-file.
    hub.state.cut_after["model-00002-of-00002.safetensors"] = 512 << 10
    seen: list[tuple[int, int]] = []
    result = huggingface.download(
        plan, tmp_path / "hub", endpoint=hub.endpoint, progress=lambda d, t, *_: seen.append((d, t))
    )
    for file, data in FILES.items():
        assert (result.path / file).read_bytes() == data
    gets = [r for r in hub.state.requests if r.startswith(f"GET /org/tiny/resolve/{plan.commit}/{name}")]
    assert gets == [f"GET /org/tiny/resolve/{plan.commit}/{name} bytes={1 << 20}-"]  # resumed, not restarted
    assert seen[-1] == (plan.total_bytes, plan.total_bytes)
    assert not list(blobs.glob("*.incomplete"))


def test_corrupted_file_fails_and_leaves_nothing_that_looks_complete(tmp_path: Path, hub: FakeHub) -> None:
    name = "model-00002-of-00002.safetensors"
    hub.state.corrupt.add(name)
    plan = huggingface.plan_download("org/tiny", allow_patterns=[name], endpoint=hub.endpoint)
    with pytest.raises(DownloadError, match="sha256 differs") as failed:
        huggingface.download(plan, tmp_path / "hub", endpoint=hub.endpoint)
    assert failed.value.reason == FailureReason.INTEGRITY and failed.value.retryable
    folder = tmp_path / "hub" / "models--org--tiny"
    assert not (folder / "snapshots" / plan.commit / name).exists()
    assert not [p for p in (folder / "blobs").iterdir() if p.is_file() and not p.name.endswith(".incomplete")]
    hub.state.corrupt.clear()
    result = huggingface.download(plan, tmp_path / "hub", endpoint=hub.endpoint)  # a retry completes
    assert hashlib.sha256((result.path / name).read_bytes()).hexdigest() == hashlib.sha256(FILES[name]).hexdigest()


def test_missing_model_and_revision_and_bad_credentials_say_what_to_fix(tmp_path: Path, hub: FakeHub) -> None:
    hub.add("org/private", {"config.json": b"{}"}, token="hf_secret_token_value")
    missing = cli(tmp_path, hub, "download", "hf://org/nope", "--result-file", str(tmp_path / "r1.json"))
    assert missing.returncode == 3 and "check the model name and revision" in missing.stderr
    assert json.loads((tmp_path / "r1.json").read_text())["reason"] == "NotFound"
    revision = cli(tmp_path, hub, "download", "hf://org/tiny", "--revision", "v9")
    assert revision.returncode == 3 and "not found" in revision.stderr
    refused = cli(tmp_path, hub, "download", "hf://org/private", "--result-file", str(tmp_path / "r2.json"))
    assert refused.returncode == 4 and "check the credentials" in refused.stderr
    assert json.loads((tmp_path / "r2.json").read_text())["reason"] == "Unauthorized"
    allowed = cli(tmp_path, hub, "download", "hf://org/private", "--format", "json", HF_TOKEN="hf_secret_token_value")
    assert allowed.returncode == 0, allowed.stderr
    assert "hf_secret_token_value" not in allowed.stdout + allowed.stderr + refused.stdout + refused.stderr
    bad = cli(tmp_path, hub, "download", "ftp://x/y")
    assert bad.returncode == 2 and "hf://org/name" in bad.stderr


def test_file_names_leaving_the_model_are_refused_before_writing(tmp_path: Path, hub: FakeHub) -> None:
    hub.add("org/evil", {"config.json": b"{}", "../../outside.txt": b"gotcha"})
    with pytest.raises(DownloadError, match="outside the model") as refused:
        huggingface.plan_download("org/evil", endpoint=hub.endpoint)
    assert refused.value.reason == FailureReason.INVALID_SOURCE
    assert not (tmp_path / "outside.txt").exists() and not list(tmp_path.rglob("outside.txt"))


def test_download_that_cannot_fit_fails_at_once_with_the_sizes(tmp_path: Path, hub: FakeHub) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    run = cli(
        tmp_path, hub, "pull", "org/tiny",
        MODEL_EXPRESS_CACHE_EVICTION_POLICY_MIN_FREE_SPACE_BYTES=str(free),
    )  # fmt: skip
    assert run.returncode == 5
    assert (
        "InsufficientStorage" not in run.stderr
        and "bytes free" in run.stderr
        and "give the cache more storage" in run.stderr
    )
    assert not [r for r in hub.state.requests if r.startswith("GET /org/tiny/resolve")]  # nothing downloaded


def test_evict_dry_run_then_for_real_keeps_pinned_and_recent(tmp_path: Path, hub: FakeHub) -> None:
    hub.add("org/old", {"config.json": b'{"old": true}'})
    hub.add("org/pinned", {"config.json": b'{"pinned": true}'})
    for repo in ("org/tiny", "org/old", "org/pinned"):
        assert cli(tmp_path, hub, "pull", repo).returncode == 0
    db = CacheDatabase(tmp_path / "models.db")
    db.touch("hf", "org/old", "main", when=1.0)  # unused since 1970
    db.touch("hf", "org/pinned", "main", when=1.0)
    db.set_pinned("hf", "org/pinned", True)
    db.close()
    env = {"MODEL_EXPRESS_CACHE_EVICTION_POLICY_UNUSED_THRESHOLD": "7d"}
    dry = json.loads(cli(tmp_path, hub, "evict", "--dry-run", "--format", "json", **env).stdout)
    assert [(e["name"], e["dryRun"]) for e in dry] == [("org/old", True)]
    assert "unused for" in dry[0]["reason"]
    assert (tmp_path / "hub" / "models--org--old").exists()
    real = cli(tmp_path, hub, "evict", **env)
    assert real.returncode == 0 and "evicted hf://org/old@main" in real.stdout
    assert not (tmp_path / "hub" / "models--org--old").exists()
    assert (tmp_path / "hub" / "models--org--pinned").exists()
    names = [m["name"] for m in json.loads(cli(tmp_path, hub, "ls", "--format", "json").stdout)]
    assert names == ["org/pinned", "org/tiny"]
    removed = cli(tmp_path, hub, "rm", "hf://org/tiny")
    assert removed.returncode == 0 and not (tmp_path / "hub" / "models--org--tiny").exists()
