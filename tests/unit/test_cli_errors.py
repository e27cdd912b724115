"""What a user can get wrong on the command line ends in one line naming the variable or flag and what
is accepted, exit 2, never a traceback; `--format` is accepted wherever a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelexpress.cli.main import build_parser, main
from modelexpress.units import rate, size


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MX_METADATA_BACKEND": "etcd"}, "error: MX_METADATA_BACKEND='etcd': Input should be 'embedded', 'kubernetes' or 'redis'"),
        ({"MX_CHUNK_BYTES": "abc"}, "error: MX_CHUNK_BYTES='abc': Input should be a valid integer"),
        ({"MX_WORKER_GRPC_PORT": "99999"}, "error: MX_WORKER_GRPC_PORT='99999': Input should be less than or equal to 65535"),
        ({"MX_STATUS_TTL_SECS": "0"}, "error: MX_STATUS_TTL_SECS='0': Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_worker_variables_name_the_variable(
    env: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for argv in (["sources", "ls", "--model-name", "a/b"], ["worker", "pull", "--model-name", "a/b"]):
        code, err = run(capsys, *argv)
        assert code == 2 and err.startswith(expected), err


@pytest.mark.parametrize("value", ["nonsense", "host:", ":50051", "host:0", "host:99999", "host:port"])
def test_a_source_endpoint_of_the_wrong_form_is_refused_before_anything_runs(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "worker", "pull", "--model-name", "a/b", "--source", value)
    assert (
        code == 2
        and err == f"error: --source {value!r}: expected host:port with a port from 1 to 65535, e.g. 10.0.0.7:50051"
    )


def test_a_gpu_device_on_a_cpu_build_of_torch_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this torch is a CUDA build; the message is for CPU builds")
    for verb in (["worker", "serve", str(tmp_path)], ["worker", "pull"]):
        code, err = run(capsys, *verb, "--model-name", "a/b", "--device", "cuda")
        assert (
            code == 2
            and err == f"error: --device cuda: this torch ({torch.__version__}) is a CPU build; use --device cpu"
        )
    code, err = run(capsys, "worker", "pull", "--model-name", "a/b", "--device", "tpu")
    assert code == 2 and err == "error: --device 'tpu': expected cpu or cuda[:N]"


def test_serving_a_directory_that_does_not_exist_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "worker", "serve", str(tmp_path / "nope"), "--model-name", "a/b")
    assert code == 2 and err == f"error: {tmp_path / 'nope'}: no such directory"


def test_no_kubernetes_credentials_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MX_METADATA_BACKEND", "kubernetes")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, err = run(capsys, "sources", "ls", "--model-name", "a/b")
    assert code == 2
    assert err.startswith(f"error: no Kubernetes credentials (kubeconfig {tmp_path / 'absent'}: ")
    assert err.endswith("set KUBECONFIG to a kubeconfig, or run in a pod")


@pytest.mark.parametrize(
    "argv",
    [
        ["--format", "json", "health"],
        ["health", "--format", "json"],
        ["--format", "json", "sources", "ls", "--model-name", "a/b"],
        ["sources", "ls", "--model-name", "a/b", "--format", "json"],
        ["worker", "pull", "--model-name", "a/b", "--format", "json"],
    ],
)
def test_format_json_is_accepted_wherever_it_is_typed(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    chosen = args.format if hasattr(args, "format") and args.format != "human" else args.output_format
    assert chosen == "json"


def test_sources_ls_honours_the_global_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MX_REGISTRY_PATH", str(tmp_path / "sources.db"))
    assert main(["--format", "json", "sources", "ls", "--model-name", "a/b"]) == 0
    json.loads(capsys.readouterr().out)  # machine-readable, not the human table


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(512, "512 B"), (2 * 2**20, "2.0 MiB"), (1536, "1.5 KiB"), (int(1.13 * 2**30), "1.13 GiB")],
)
def test_sizes_never_round_to_zero(nbytes: int, text: str) -> None:
    assert size(nbytes) == text
    assert rate(5.9e9) == "5.9 GB/s" and rate(2.66e8) == "266 MB/s"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MX_OPERATOR_RETRY_INTERVAL_SECS": "abc"}, "error: MX_OPERATOR_RETRY_INTERVAL_SECS='abc': Input should be a valid number"),
        ({"MX_STATUS_TTL_SECS": "-1"}, "error: MX_STATUS_TTL_SECS='-1': Input should be greater than 0"),
        ({"MX_OPERATOR_RETRY_LIMIT": "0"}, "error: MX_OPERATOR_RETRY_LIMIT='0': Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_operator_variables_stop_it_at_once_with_one_line(env: dict[str, str], expected: str) -> None:
    """The operator's entry point, as the chart runs it: a bad setting is one line and exit 2 before
    kopf starts (whose startup handlers would retry it every minute with a traceback)."""
    done = subprocess.run(
        [sys.executable, "-m", "modelexpress_operator", "--standalone", "--health-port", "0"],
        env={**os.environ, **env, "KUBECONFIG": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == done.stderr.strip().splitlines()[0] and done.stderr.startswith(expected), done.stderr
