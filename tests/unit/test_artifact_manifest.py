"""The artifact manifest's rules: safe paths, keys compared entry for entry, bounds, and what is listed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelexpress._proto.worker.v1 import worker_pb2
from modelexpress.artifacts import ArtifactManifest, ArtifactRefusedError, collect
from modelexpress.artifacts.manifest import ArtifactFile, inside, is_entry_point, key_mismatch, safe_relative

KEY = {"model": "org/m", "dtype": "bfloat16", "vllm_config_hash": "abc"}
DIGEST = "0" * 64


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "a\x00b", "", "x" * 2000, "a/."]
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        safe_relative(path)


def test_nested_relative_paths_are_accepted() -> None:
    assert safe_relative("torch_compile_cache/torch_aot_compile/ab12/rank_0_0/model") == (
        "torch_compile_cache/torch_aot_compile/ab12/rank_0_0/model"
    )


def test_a_symbolic_link_cannot_lead_outside_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(ValueError, match="outside"):
        inside(root, "link/evil.so")
    assert inside(root, "sub/ok.so") == (root / "sub" / "ok.so").resolve()


def test_a_manifest_from_the_wire_with_an_escaping_path_is_refused_naming_the_entry() -> None:
    msg = worker_pb2.ArtifactManifest(key=KEY, files=[
        worker_pb2.ArtifactFile(root="vllm", path="ok", size=1, sha256=DIGEST),
        worker_pb2.ArtifactFile(root="vllm", path="../../home/x/.bashrc", size=1, sha256=DIGEST),
    ])  # fmt: skip
    with pytest.raises(ArtifactRefusedError, match=r"files\.1\.path.*'\.\.'"):
        ArtifactManifest.from_proto(msg)


def test_the_key_must_match_entry_for_entry() -> None:
    theirs = {**KEY, "dtype": "float16"}
    assert key_mismatch(KEY, KEY) == ""
    assert key_mismatch(KEY, theirs) == "dtype: 'bfloat16' here, 'float16' there"
    assert "torch: '<unset>' here" in key_mismatch(KEY, {**KEY, "torch": "2.13.0"})
    manifest = ArtifactManifest(key=theirs, files=[])
    with pytest.raises(ArtifactRefusedError, match=r"compiled under another key.*dtype"):
        manifest.check(KEY, {"vllm": Path("/tmp")}, 1 << 30, 100)


def _manifest(*files: tuple[str, str, int]) -> ArtifactManifest:
    return ArtifactManifest(key=KEY, files=[ArtifactFile(root=r, path=p, size=n, sha256=DIGEST) for r, p, n in files])


def test_bounds_roots_and_duplicates_are_checked(tmp_path: Path) -> None:
    roots = {"vllm": tmp_path}
    _manifest(("vllm", "a", 10), ("vllm", "b", 10)).check(KEY, roots, 20, 2)
    with pytest.raises(ArtifactRefusedError, match="MX_ARTIFACT_MAX_BYTES=19"):
        _manifest(("vllm", "a", 10), ("vllm", "b", 10)).check(KEY, roots, 19, 2)
    with pytest.raises(ArtifactRefusedError, match="MX_ARTIFACT_MAX_FILES=1"):
        _manifest(("vllm", "a", 10), ("vllm", "b", 10)).check(KEY, roots, 20, 1)
    with pytest.raises(ArtifactRefusedError, match="cache 'triton', which this worker does not have"):
        _manifest(("triton", "a", 1)).check(KEY, roots, 20, 2)
    with pytest.raises(ArtifactRefusedError, match="listed twice"):
        _manifest(("vllm", "a", 1), ("vllm", "a", 1)).check(KEY, roots, 20, 2)


def test_collect_lists_regular_files_with_their_digests_and_skips_links_locks_and_staging(tmp_path: Path) -> None:
    root = tmp_path / "vllm"
    tree = root / "torch_compile_cache" / "torch_aot_compile" / "h1"
    (tree / "rank_0_0").mkdir(parents=True)
    (tree / "rank_0_0" / "model").write_bytes(b"compiled")
    (tree / "inductor_cache" / "ab").mkdir(parents=True)
    (tree / "inductor_cache" / "ab" / "k.so").write_bytes(b"\x7fELF" * 100)
    (tree / "inductor_cache" / "ab" / "k.so.lock").write_bytes(b"")
    (tree / "inductor_cache" / "tmpabc.tmp").write_bytes(b"half")
    (tree / ".mx-incoming-123").mkdir()
    (tree / ".mx-incoming-123" / "x").write_bytes(b"staged")
    os.symlink("/etc/hostname", tree / "link")
    (root / "torch_compile_cache" / "other-model").mkdir()
    (root / "torch_compile_cache" / "other-model" / "f").write_bytes(b"not ours")

    manifest = collect(KEY, [("vllm", root, "torch_compile_cache/torch_aot_compile/h1")])
    listed = {f.path: f for f in manifest.files}
    assert set(listed) == {
        "torch_compile_cache/torch_aot_compile/h1/inductor_cache/ab/k.so",
        "torch_compile_cache/torch_aot_compile/h1/rank_0_0/model",
    }
    model = listed["torch_compile_cache/torch_aot_compile/h1/rank_0_0/model"]
    assert model.size == 8 and model.sha256 == hashlib.sha256(b"compiled").hexdigest()
    assert manifest.total_bytes == 408
    assert collect(KEY, [("vllm", root, "torch_compile_cache/missing")]).files == []


def test_entry_points_are_what_vllm_opens_first() -> None:
    assert is_entry_point("torch_compile_cache/torch_aot_compile/h/rank_0_0/model")
    assert is_entry_point("torch_compile_cache/ab12/rank_0_0/backbone/vllm_compile_cache.py")
    assert not is_entry_point("torch_compile_cache/torch_aot_compile/h/inductor_cache/ab/model.so")


def test_the_compile_key_names_every_identity_field_but_the_weights_version() -> None:
    from modelexpress.p2p.identity import WorkerIdentity
    from modelexpress.vllm_plugin.artifacts import _identity_fields

    identity = WorkerIdentity(model_name="org/m", engine_version="0.32.0", dtype="float32", tensor_parallel_size=2,
                              rank=1)  # fmt: skip
    fields = _identity_fields(identity)
    assert fields == {
        "model": "org/m", "revision": "main", "engine": "vllm", "vllm": "0.32.0", "dtype": "float32",
        "quantization": "", "tensor_parallel_size": "2", "pipeline_parallel_size": "1", "expert_parallel_size": "1",
        "gpu_architecture": "", "rank": "1",
    }  # fmt: skip
    # kernels do not depend on the values of the weights: every version shares the compiled artifacts
    assert _identity_fields(identity.model_copy(update={"weights_version": "7"})) == fields
    # and everything else that is part of the identity is part of the key
    assert len(fields) == len(identity.layout_key()) - 1
