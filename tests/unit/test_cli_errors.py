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


def test_a_port_already_served_refuses_the_second_server_with_one_line(tmp_path: Path) -> None:
    """gRPC's default SO_REUSEPORT let two servers share a port, clients reaching either at random."""
    from tests.harness.processes import free_port

    port = str(free_port())
    env = {**os.environ, "MX_WORKER_HOST": "127.0.0.1", "MODEL_EXPRESS_CACHE_DIRECTORY": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "modelexpress.cli.main"]
    first = subprocess.Popen([*command, "server", "--host", "127.0.0.1", "--port", port], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert first.stdout is not None and "listening" in first.stdout.readline()
        import torch
        from safetensors.torch import save_file

        (tmp_path / "model").mkdir()
        save_file({"w": torch.zeros(4)}, str(tmp_path / "model" / "w.safetensors"))
        for argv, worker_env in (
            (["server", "--host", "127.0.0.1", "--port", port], {}),
            (["worker", "serve", str(tmp_path / "model"), "--model-name", "org/m"], {"MX_WORKER_GRPC_PORT": port}),
        ):
            second = subprocess.run([*command, *argv], env={**env, **worker_env}, capture_output=True, text=True,
                                    timeout=60, check=False)  # fmt: skip
            assert second.returncode == 2, second.stderr
            errors = [line for line in second.stderr.splitlines() if "error" in line.lower()]
            assert errors == [f"error: cannot listen on 127.0.0.1:{port} for the "
                              f"{'server' if argv[0] == 'server' else 'WorkerService'}: the port is in use (another "
                              "process serves it) or the address is not one of this machine's; choose another port "
                              "or host"], second.stderr  # fmt: skip
            assert "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.wait(10)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--model-name", "bad name!!"], "error: --model-name 'bad name!!': String should match pattern"),
        (["--model-name", ""], "error: --model-name '': String should have at least 1 character"),
        (["--model-name", "org/m", "--tp", "-2"], "error: --tp -2: Input should be greater than or equal to 1"),
        (["--model-name", "org/m", "--pp", "0"], "error: --pp 0: Input should be greater than or equal to 1"),
        (["--model-name", "org/m", "--revision", "a b"], "error: --revision 'a b': String should match pattern"),
        (["--model-name", "org/m", "--rank", "5"], "error: --rank 5 is outside --tp 1 x --pp 1 (ranks 0..0)"),
    ],
)  # fmt: skip
def test_bad_identity_flags_name_the_flag(
    flags: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MX_REGISTRY_PATH", str(tmp_path / "sources.db"))
    code, err = run(capsys, "worker", "pull", *flags, "--model-dir", str(tmp_path))
    assert code == 2 and err.startswith(expected) and len(err.splitlines()) == 1, err


def test_unusable_registries_and_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MX_REGISTRY_PATH", str(tmp_path))
    assert run(capsys, "sources", "ls") == (1, f"error: MX_REGISTRY_PATH={tmp_path} is a directory: give the "
                                              f"registry's file, e.g. {tmp_path / 'sources.db'}")  # fmt: skip
    absent = tmp_path / "nowhere" / "x.db"
    monkeypatch.setenv("MX_REGISTRY_PATH", str(absent))
    assert run(capsys, "sources", "ls")[0] == 0 and not absent.parent.exists()  # listing creates nothing
    monkeypatch.setenv("MX_METADATA_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", "notaurl")
    code, err = run(capsys, "sources", "ls")
    assert code == 1 and err.startswith("error: REDIS_URL=notaurl is not a Redis URL"), err
    monkeypatch.delenv("MX_METADATA_BACKEND")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert run(capsys, "config", "validate", str(binary)) == (
        1, f"configuration file {binary} is not UTF-8 text (byte 0): give a YAML file")  # fmt: skip
    assert run(capsys, "config", "generate", "-o", str(tmp_path)) == (
        2, f"error: --output {tmp_path} is a directory: name the file to write, e.g. {tmp_path / 'model-express.yaml'}")  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_version_goes_to_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    out = capsys.readouterr()
    assert stopped.value.code == 0 and out.out.startswith("modelexpress ") and out.err == ""


def test_format_json_is_honoured_by_config_and_validate_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--format json` was accepted and ignored by these verbs (YAML or prose came out)."""
    for argv in (["config", "generate"], ["config", "show"], ["--format", "json", "config", "show"]):
        assert main([*argv, "--format", "json"] if "--format" not in argv else argv) == 0
        assert json.loads(capsys.readouterr().out)["server"]["port"] == 8001
    good = tmp_path / "good.yaml"
    good.write_text("server:\n  port: 9001\n")
    assert main(["config", "validate", str(good), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"file": str(good), "valid": True, "error": None}
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: 70000\n")
    assert main(["config", "validate", str(bad), "--format", "json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False and "server.port" in verdict["error"]
    assert main(["server", "--validate-config", "-p", "9002", "--format", "json-pretty"]) == 0
    assert json.loads(capsys.readouterr().out) == {"valid": True, "host": "0.0.0.0", "port": 9002}


def test_the_chunk_size_help_and_docs_give_the_default_the_code_uses() -> None:
    from modelexpress.config.client import ClientSettings

    default = ClientSettings.model_fields["transfer_chunk_size"].default
    assert default == 1 << 20
    from modelexpress.cli.main import _leaves

    root = build_parser()
    helps = {a.help for p in (root, *_leaves(root)) for a in p._actions if "--transfer-chunk-size" in a.option_strings}
    assert helps and all(h is not None and "default 1 MiB" in h for h in helps), helps
    docs = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| `--transfer-chunk-size`"))
    assert f"`{default}`" in row


def test_small_things_a_new_user_met(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit codes as documented, the variable named, the right words for a file, no silent overwrite."""
    monkeypatch.setenv("MODEL_EXPRESS_CACHE_DIRECTORY", str(tmp_path / "cache"))
    assert run(capsys, "cache", "rm", "nope/nope") == (3, "error: nope/nope is not cached")  # 3: not found
    monkeypatch.setenv("MODEL_EXPRESS_TIMEOUT", "abc")
    with pytest.raises(SystemExit) as stopped:
        main(["health"])
    assert str(stopped.value.code).startswith("error: MODEL_EXPRESS_TIMEOUT='abc': Input should be a valid number")
    monkeypatch.delenv("MODEL_EXPRESS_TIMEOUT")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    code, err = run(capsys, "worker", "serve", str(weights), "--model-name", "org/m")
    assert code == 2 and err == f"error: {weights} is a file: give the directory that holds the model's *.safetensors"
    existing = tmp_path / "mx.yaml"
    existing.write_text("mine\n")
    assert run(capsys, "config", "generate", "-o", str(existing)) == (
        2, f"error: --output {existing} exists: pass --force to replace it")  # fmt: skip
    assert existing.read_text() == "mine\n"
    assert main(["config", "generate", "-o", str(existing), "--force"]) == 0 and "server:" in existing.read_text()


def test_quiet_and_verbose_work_before_and_after_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelexpress.cli.worker_run import log_level

    for argv in (["-q", "worker", "pull", "--model-name", "a/b"], ["worker", "pull", "--model-name", "a/b", "-q"]):
        args = build_parser(argv).parse_args(argv)
        assert args.quiet is True and log_level(args) == "warn"
    verbose = ["worker", "pull", "--model-name", "a/b", "-v"]
    assert log_level(build_parser(verbose).parse_args(verbose)) == "debug"
    explicit = ["worker", "pull", "--model-name", "a/b", "-q", "--log-level", "error"]
    assert log_level(build_parser(explicit).parse_args(explicit)) == "error"  # an explicit level wins
    plain = ["worker", "pull", "--model-name", "a/b"]
    assert log_level(build_parser(plain).parse_args(plain)) == "info"
    assert main(["-q", "config", "generate", "-o", str(tmp_path / "a.yaml")]) == 0
    assert main(["config", "generate", "-o", str(tmp_path / "b.yaml"), "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # no "wrote ..." under -q
    assert main(["config", "generate", "-o", str(tmp_path / "c.yaml")]) == 0
    assert capsys.readouterr().err.strip() == f"wrote {tmp_path / 'c.yaml'}"
