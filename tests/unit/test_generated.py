"""Generated files (CRD YAML, gRPC stubs) match their sources, and the stubs import and round-trip."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("mx_generate", ROOT / "hack" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    problems = _generator().check()
    assert problems == [], "run `make generate`:\n" + "\n".join(problems)


def test_stub_messages_round_trip() -> None:
    from modelexpress._proto.worker.v1 import worker_pb2, worker_pb2_grpc

    page = worker_pb2.TensorPage(
        first_index=0,
        tensors=[
            worker_pb2.TensorDescriptor(
                name="model.layers.0.mlp.weight", dtype=worker_pb2.DTYPE_BFLOAT16, shape=[4, 8], nbytes=64
            ),
            worker_pb2.TensorDescriptor(
                name="up.weight", shared_prefix_length=19, dtype=worker_pb2.DTYPE_FLOAT8_E4M3FN, shape=[4]
            ),
        ],
    )
    chunk = worker_pb2.ManifestChunk(page=page)
    again = worker_pb2.ManifestChunk.FromString(chunk.SerializeToString())
    assert again.WhichOneof("part") == "page"
    assert list(again.page.tensors[0].shape) == [4, 8]
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
