"""hack/save_image.py: `docker save`'s archive rewritten with gzip layers, read as a stream."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "save_image.py"


def _member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _docker_archive(layers: dict[str, bytes]) -> bytes:
    """An archive laid out as the classic `docker save` writes one: manifest.json last."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for layer_id, content in layers.items():
            directory = tarfile.TarInfo(layer_id)
            directory.type = tarfile.DIRTYPE
            archive.addfile(directory)
            _member(archive, f"{layer_id}/VERSION", b"1.0")
            _member(archive, f"{layer_id}/layer.tar", content)
        _member(archive, "cfg.json", b'{"rootfs": {"type": "layers"}}')
        manifest = [{"Config": "cfg.json", "RepoTags": ["local/x:dev"], "Layers": [f"{i}/layer.tar" for i in layers]}]
        _member(archive, "manifest.json", json.dumps(manifest).encode())
    return buffer.getvalue()


def _run(data: bytes, out: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, str(SCRIPT), str(out)], input=data, capture_output=True, check=False)


def test_layers_are_gzipped_and_the_manifest_names_them(tmp_path: Path) -> None:
    layers = {"aaa": b"first layer " * 50_000, "bbb": bytes(range(256)) * 4_000}
    out = tmp_path / "x.tar"
    result = _run(_docker_archive(layers), out)
    assert result.returncode == 0, result.stderr
    with tarfile.open(out) as archive:
        names = archive.getnames()
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert manifest[0]["Layers"] == ["aaa/layer.tar.gz", "bbb/layer.tar.gz"]
        assert manifest[0]["RepoTags"] == ["local/x:dev"]
        for layer_id, content in layers.items():
            assert f"{layer_id}/layer.tar" not in names
            packed = archive.extractfile(f"{layer_id}/layer.tar.gz").read()  # type: ignore[union-attr]
            assert packed[:2] == b"\x1f\x8b"  # what containerd's import detects the compression by
            assert gzip.decompress(packed) == content
        assert archive.extractfile("cfg.json").read() == b'{"rootfs": {"type": "layers"}}'  # type: ignore[union-attr]
    assert out.stat().st_size < len(layers["aaa"]) + len(layers["bbb"])
    assert [p.name for p in tmp_path.iterdir()] == ["x.tar"]


def test_input_that_is_not_a_docker_archive_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _member(archive, "aaa/layer.tar", b"x" * 1000)
    result = _run(buffer.getvalue(), out)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("error: could not write")
    assert "manifest.json" in result.stderr.decode()
    assert not out.exists()
    truncated = _run(_docker_archive({"aaa": b"y" * 100_000})[:50_000], out)
    assert truncated.returncode == 1
    assert list(tmp_path.iterdir()) == []
