"""Generated files (CRD YAML, gRPC stubs) match their sources, and the stubs import and round-trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_up_to_date() -> None:
    # In its own process: grpc_tools' bundled protoc crashes when loaded next to torch, which other
    # test modules import.
    out = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, "run `make generate`:\n" + out.stderr


def test_stub_messages_round_trip() -> None:
    from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc

    page = worker_pb2.TensorPage(
        first_index=0,
        name_suffixes=["model.layers.0.mlp.weight", "up.weight"],
        shared_prefix_lengths=[0, 19],
        dtypes=[worker_pb2.DTYPE_BFLOAT16, worker_pb2.DTYPE_FLOAT8_E4M3FN],
        ranks=[2, 1],
        dims=[4, 8, 4],
        nbytes=[64, 4],
    )
    chunk = worker_pb2.ManifestChunk(page=page)
    again = worker_pb2.ManifestChunk.FromString(chunk.SerializeToString())
    assert again.WhichOneof("part") == "page"
    assert list(again.page.dims) == [4, 8, 4] and list(again.page.dtypes) == list(page.dtypes)
    assert hasattr(worker_pb2_grpc, "WorkerServiceStub")
    assert hasattr(worker_pb2_grpc, "add_WorkerServiceServicer_to_server")


def test_nothing_shadows_the_standard_library() -> None:
    """Run from the repository root, `import operator` must still be the standard library's."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, sys; print(operator.__file__); assert hasattr(operator, 'itemgetter')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "modelexpress" not in out.stdout
    assert not (ROOT / "operator" / "__init__.py").exists()
