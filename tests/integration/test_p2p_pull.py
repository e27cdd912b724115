"""Real transfers: source workers in their own processes, the target pulling over NIXL (UCX, host memory).

Faults are real too: sources killed with SIGKILL mid-transfer, memory corrupted after checksumming,
closed ports, mismatched layouts.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import modelexpress.p2p.pull as pull_module
from hack.make_tiny_model import tiny_model, write
from modelexpress.p2p.checksum import tensor_bytes
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import TensorSpec, allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.plan import TensorMismatchError
from modelexpress.p2p.pull import NoSourceError, PullOptions, pull
from modelexpress.p2p.pull import sources as pull_sources
from modelexpress.p2p.pull.backoff import FLOOR, FRACTION, Backoff
from modelexpress.p2p.pull.gil import PULL_SWITCH_INTERVAL
from modelexpress.p2p.pull.transfer import Transfer
from modelexpress.p2p.pull.verify import RowSumRuns
from modelexpress.p2p.safetensors_dir import disk_fallback, scan
from tests.harness.processes import free_port
from tests.helpers.read_backs import count_read_backs
from tests.helpers.source_proc import special_tensors
from tests.helpers.sources import ROOT, sources, start_source

IDENTITY = WorkerIdentity(model_name="test/model")
FAST = PullOptions(chunk_bytes=1 << 20, max_inflight=2, transfer_timeout=10, connect_timeout=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    write(out, tiny_model(layers=6, hidden=384), files=3)
    return out


@pytest.fixture(scope="module")
def original(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


@pytest.fixture
def engine() -> Iterator[NixlEngine]:
    eng = NixlEngine()
    yield eng
    eng.deregister_all()


def _target(model_dir: Path, engine: NixlEngine):  # type: ignore[no-untyped-def]
    layout = allocate_pool([s.spec for s in scan(model_dir)])
    engine.register(layout)
    return layout


def _assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(tensor_bytes(got[name].contiguous()), tensor_bytes(tensor.contiguous())), name


def test_pull_from_one_source_is_bit_identical(
    model_dir: Path, original: dict[str, torch.Tensor], engine: NixlEngine, tmp_path: Path
) -> None:
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (src,):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [src.endpoint], engine, FAST)
    _assert_identical(layout.tensors, original)
    assert result.sources == [src.endpoint]
    assert result.bytes == layout.total_bytes
    assert not result.fell_back and not result.failed_sources


def test_the_cyclic_gc_is_paused_while_a_pull_plans_and_moves_bytes_and_restored_after(
    model_dir: Path, engine: NixlEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matching a manifest and planning thousands of tensors allocate objects in bulk: a full collection
    there walks every object of a serving engine. The pull pauses the collector and turns it back on."""
    seen: dict[str, list[bool]] = {"match": [], "post": []}
    intervals: list[float] = []  # the GIL switch interval is short while READs are posted, then restored
    before = sys.getswitchinterval()
    real_match, real_post = pull_sources.match, Transfer._post

    def match(*args: Any, **kwargs: Any) -> Any:
        seen["match"].append(gc.isenabled())
        return real_match(*args, **kwargs)

    def post(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen["post"].append(gc.isenabled())
        intervals.append(sys.getswitchinterval())
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(pull_sources, "match", match)
    monkeypatch.setattr(Transfer, "_post", post)
    assert gc.isenabled()
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (src,):
        result = pull(_target(model_dir, engine), IDENTITY, [src.endpoint], engine, FAST)
    assert not result.fell_back
    assert seen["match"] == [False] and seen["post"] and not any(seen["post"]), seen
    assert gc.isenabled()
    assert intervals and max(intervals) <= min(PULL_SWITCH_INTERVAL, before) + 2e-6
    assert sys.getswitchinterval() == before


def test_reads_are_striped_across_every_source(
    model_dir: Path, original: dict[str, torch.Tensor], engine: NixlEngine, tmp_path: Path
) -> None:
    with sources(tmp_path, 2, "--model-dir", str(model_dir)) as (a, b):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [a.endpoint, b.endpoint], engine, FAST)
    assert sorted(result.sources) == sorted([a.endpoint, b.endpoint])
    _assert_identical(layout.tensors, original)


@pytest.mark.parametrize("max_sources", [0, 1], ids=["both-striped", "second-in-reserve"])
def test_source_killed_mid_transfer_completes_from_another(
    model_dir: Path, original: dict[str, torch.Tensor], engine: NixlEngine, tmp_path: Path, max_sources: int
) -> None:
    """Striped over both, or (max_sources=1) over the first only with the second in reserve, linked the
    moment the first dies: either way the pull completes from the second, without the disk."""
    with sources(tmp_path, 2, "--model-dir", str(model_dir)) as (a, b):
        layout = _target(model_dir, engine)
        killed: list[int] = []

        def kill_first_source(done: int, total: int) -> None:
            if not killed and done < total:
                killed.append(done)
                a.kill()

        options = dataclasses.replace(FAST, max_sources=max_sources)
        result = pull(layout, IDENTITY, [a.endpoint, b.endpoint], engine, options, progress=kill_first_source)
    assert killed, "the source was never killed: the transfer finished in one step"
    assert a.endpoint in result.failed_sources and b.endpoint in result.sources
    assert not result.fell_back
    _assert_identical(layout.tensors, original)


def test_only_one_of_several_sources_is_striped_with_max_sources_1(
    model_dir: Path, original: dict[str, torch.Tensor], engine: NixlEngine, tmp_path: Path
) -> None:
    with sources(tmp_path, 2, "--model-dir", str(model_dir)) as (a, b):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [a.endpoint, b.endpoint], engine, dataclasses.replace(FAST, max_sources=1))
    assert result.sources == [a.endpoint] and not result.failed_sources
    _assert_identical(layout.tensors, original)


def test_only_source_killed_falls_back_to_disk(
    model_dir: Path, original: dict[str, torch.Tensor], engine: NixlEngine, tmp_path: Path
) -> None:
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (a,):
        layout = _target(model_dir, engine)
        calls: list[int] = []

        def kill(done: int, total: int) -> None:
            if not calls:
                calls.append(done)
                a.kill()

        result = pull(layout, IDENTITY, [a.endpoint], engine, FAST, fallback=disk_fallback(model_dir), progress=kill)
    assert result.fell_back, "nothing came from the fallback"
    assert a.endpoint in result.failed_sources
    assert result.phases.seconds["disk"] > 0  # the tensors the dead source did not deliver, read from disk
    _assert_identical(layout.tensors, original)
    # the same engine and process carry on: a transport failure never poisons the receiver
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (fresh,):
        again = _target(model_dir, engine)
        assert not pull(again, IDENTITY, [fresh.endpoint], engine, FAST).fell_back
    _assert_identical(again.tensors, original)


@pytest.mark.parametrize(
    ("bad_algorithm", "good_algorithm"),
    [("xxh3-64", "xxh3-64"), ("row-sum-64", "row-sum-64"), ("row-sum-64", "xxh3-64")],
)
def test_corrupted_source_is_detected_and_refetched(
    model_dir: Path,
    original: dict[str, torch.Tensor],
    engine: NixlEngine,
    tmp_path: Path,
    bad_algorithm: str,
    good_algorithm: str,
) -> None:
    """Whatever checksum each source announces (xxh3 streamed as bytes land, or row sums of whole tensors)."""
    with (
        sources(
            tmp_path, 1, "--model-dir", str(model_dir), "--corrupt", env={"MX_CHECKSUM_ALGORITHM": bad_algorithm}
        ) as (bad,),
        sources(tmp_path, 1, "--model-dir", str(model_dir), env={"MX_CHECKSUM_ALGORITHM": good_algorithm}) as (good,),
    ):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [bad.endpoint, good.endpoint], engine, FAST)
    assert result.refetched_tensors >= 1
    assert not result.fell_back
    _assert_identical(layout.tensors, original)


def test_a_repair_whose_source_dies_moves_to_another_source(
    model_dir: Path, original: dict[str, torch.Tensor], engine: NixlEngine, tmp_path: Path
) -> None:
    """The source a corrupt tensor's repair is pinned to is killed the moment the repair is scheduled
    (before its READs are posted): the stranded repair moves on, and the pull still ends identical."""
    with (
        sources(tmp_path, 1, "--model-dir", str(model_dir), "--corrupt") as (bad,),
        sources(tmp_path, 2, "--model-dir", str(model_dir)) as (first, second),
    ):
        by_endpoint = {first.endpoint: first, second.endpoint: second}
        killed: list[str] = []

        class KillTheRepairer(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                chosen = str(record.args[-1]) if isinstance(record.args, tuple) and record.args else ""
                if not killed and "fetching it again from" in record.msg and chosen in by_endpoint:
                    killed.append(chosen)
                    by_endpoint[chosen].kill()  # waits: it is gone before the repair's first READ

        handler = KillTheRepairer(logging.WARNING)
        logger = logging.getLogger(pull_module.__name__)
        logger.addHandler(handler)
        try:
            layout = _target(model_dir, engine)
            result = pull(layout, IDENTITY, [bad.endpoint, first.endpoint, second.endpoint], engine, FAST)
        finally:
            logger.removeHandler(handler)
    assert killed, "no repair went to a healthy source"
    survivor = second.endpoint if killed[0] == first.endpoint else first.endpoint
    assert killed[0] in result.failed_sources and survivor in result.sources
    assert result.refetched_tensors >= 1 and not result.fell_back
    _assert_identical(layout.tensors, original)


def test_corrupted_only_source_without_fallback_loads_nothing(
    model_dir: Path, engine: NixlEngine, tmp_path: Path
) -> None:
    with sources(tmp_path, 1, "--model-dir", str(model_dir), "--corrupt") as (bad,):
        layout = _target(model_dir, engine)
        with pytest.raises(NoSourceError, match="could not be pulled") as info:
            pull(layout, IDENTITY, [bad.endpoint], engine, FAST)
    # The error names the source and what was wrong with it, not "none offered".
    assert f"{bad.endpoint}: " in str(info.value) and "failed checksum verification (e.g. " in str(info.value)
    assert "none offered" not in str(info.value)


def test_shape_mismatch_names_the_tensors(model_dir: Path, engine: NixlEngine, tmp_path: Path) -> None:
    specs = [s.spec for s in scan(model_dir)]
    first = specs[0]
    specs[0] = TensorSpec(first.name, first.dtype, (first.shape[0] + 1, *first.shape[1:]))
    specs[1] = TensorSpec(specs[1].name, "float16" if specs[1].dtype != "float16" else "float32", specs[1].shape)
    layout = allocate_pool(specs)
    engine.register(layout)
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (src,), pytest.raises(TensorMismatchError) as info:
        pull(layout, IDENTITY, [src.endpoint], engine, FAST)
    assert first.name in str(info.value) and specs[1].name in str(info.value)
    assert "2 tensor(s) do not match" in str(info.value)


def test_other_identity_is_refused(model_dir: Path, engine: NixlEngine, tmp_path: Path) -> None:
    with sources(tmp_path, 1, "--model-dir", str(model_dir), "--rank", "1") as (src,):
        layout = _target(model_dir, engine)
        with pytest.raises(NoSourceError, match=r"rank: 0 != 1"):
            pull(layout, IDENTITY, [src.endpoint], engine, FAST)


def test_unreachable_source_is_a_clear_error_not_a_hang(model_dir: Path, engine: NixlEngine) -> None:
    layout = _target(model_dir, engine)
    options = PullOptions(connect_timeout=2, transfer_timeout=2)
    with pytest.raises(NoSourceError, match=r"127\.0\.0\.1:9") as info:
        pull(layout, IDENTITY, ["127.0.0.1:9"], engine, options)
    assert "UNAVAILABLE" in str(info.value) or "DEADLINE" in str(info.value)


def test_awkward_tensors_move_correctly(engine: NixlEngine, tmp_path: Path) -> None:
    """Zero-byte tensors, non-contiguous views, bf16 and fp8 (no NumPy equivalent) arrive bit-identical."""
    want = special_tensors()
    layout = allocate_pool([TensorSpec.of(name, t) for name, t in want.items()])
    engine.register(layout)
    with sources(tmp_path, 1, "--special") as (src,):
        result = pull(layout, IDENTITY, [src.endpoint], engine, FAST)
    assert result.bytes == sum(t.numel() * t.element_size() for t in want.values())
    _assert_identical(layout.tensors, want)
    assert layout.tensors["empty.weight"].shape == (0, 16)


_PEAK_SCRIPT = """
import json, sys, torch
from modelexpress.p2p.identity import WorkerIdentity
from modelexpress.p2p.memory import allocate_pool
from modelexpress.p2p.nixl_engine import NixlEngine
from modelexpress.p2p.pull import PullOptions, pull
from modelexpress.p2p.safetensors_dir import disk_fallback, scan
from tests.helpers.sources import start_source
from pathlib import Path
model, tmp = Path(sys.argv[1]), Path(sys.argv[2])
a = start_source(tmp, "--model-dir", str(model)); b = start_source(tmp, "--model-dir", str(model))
engine = NixlEngine()
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark (VmHWM): start-up peaks must not hide the pull's
before = kib("VmRSS")
layout = allocate_pool([s.spec for s in scan(model)])
engine.register(layout)
state = []
def kill(done, total):
    if not state:
        state.append(done); a.kill()
r = pull(layout, WorkerIdentity(model_name="test/model"), [a.endpoint, b.endpoint], engine,
         PullOptions(chunk_bytes=4 << 20, max_inflight=2, transfer_timeout=10), fallback=disk_fallback(model), progress=kill)
peak = kib("VmHWM")
b.stop()
print(json.dumps({"model": layout.total_bytes, "growth": peak - before, "failed": list(r.failed_sources)}))
"""


def test_failover_never_holds_two_copies(tmp_path: Path) -> None:
    """Peak memory of a pull that fails over stays within one model plus bounded staging."""
    model = tmp_path / "big"
    write(model, tiny_model(layers=8, hidden=1024), files=2)  # ~170 MiB
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(model), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    import json

    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["failed"], "no failover happened"
    # the measurement sees the one copy of the model that the pull fills...
    assert figures["growth"] >= 0.9 * figures["model"], figures
    # ...and nothing like a second one: one model plus staging and runtime overheads within 64 MiB
    assert figures["growth"] <= figures["model"] + (64 << 20), figures


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_metrics_count_bytes_and_pulls(model_dir: Path, engine: NixlEngine, tmp_path: Path) -> None:
    from modelexpress.metrics import serve_metrics

    port = serve_metrics(0, "127.0.0.1")
    assert port is not None
    before = _scrape(port)
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (src,):
        layout = _target(model_dir, engine)
        pull(layout, IDENTITY, [src.endpoint], engine, FAST)
    after = _scrape(port)
    assert after["modelexpress_pull_bytes_total"] - before.get("modelexpress_pull_bytes_total", 0) == layout.total_bytes
    assert (
        after['modelexpress_pulls_total{outcome="ok"}'] - before.get('modelexpress_pulls_total{outcome="ok"}', 0) == 1
    )
    assert after["modelexpress_pull_duration_seconds_count"] >= 1


def test_idle_source_does_not_spin_and_hears_of_every_pull(model_dir: Path, engine: NixlEngine, tmp_path: Path) -> None:
    port = free_port()
    src = start_source(tmp_path, "--model-dir", str(model_dir), env={"MX_METRICS_PORT": str(port)})
    try:
        time.sleep(0.5)  # past start-up
        cpu = _cpu_seconds(src.proc.pid)
        time.sleep(2)
        idle_share = (_cpu_seconds(src.proc.pid) - cpu) / 2
        # NIXL's progress thread, were it on, would keep one core busy (share ~1.0)
        assert idle_share < 0.25, f"an idle source used {idle_share:.0%} of a core"

        layout = _target(model_dir, engine)
        for _ in range(2):
            pull(layout, IDENTITY, [src.endpoint], engine, FAST)
        deadline = time.monotonic() + 10
        while (served := _scrape(port)).get("modelexpress_served_pulls_total", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served["modelexpress_served_pulls_total"] == 2
        assert served["modelexpress_served_bytes_total"] == 2 * layout.total_bytes
    finally:
        src.stop()


def test_cli_pull_without_local_files_takes_the_layout_from_the_source(model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MX_REGISTRY_PATH": str(tmp_path / "reg.db"), "MX_WORKER_HOST": "127.0.0.1"}
    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (src,):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelexpress",
                "worker",
                "pull",
                "--model-name",
                "test/model",
                "--source",
                src.endpoint,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert f"pulled {len(scan(model_dir))} tensors" in out.stdout
    assert "from 1 source(s); all checksums verified" in out.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "modelexpress", "worker", "pull", "--model-name", "nobody/serves-this"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert missing.returncode == 3
    assert "no Ready source of nobody/serves-this rank 0" in missing.stderr


def test_cli_pull_takes_the_layout_from_any_source_that_answers(model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MX_REGISTRY_PATH": str(tmp_path / "reg.db"), "MX_WORKER_HOST": "127.0.0.1",
           "MX_CONNECT_TIMEOUT_SECS": "3"}  # fmt: skip
    dead = f"127.0.0.1:{free_port()}"

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "modelexpress", "worker", "pull", "--model-name", "test/model", *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)

    with sources(tmp_path, 1, "--model-dir", str(model_dir)) as (src,):
        out = cli("--source", dead, "--source", src.endpoint, "--format", "json")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    summary = json.loads(out.stdout)
    assert summary["sources"] == [src.endpoint] and dead in summary["failed_sources"]
    assert summary["tensors"] == summary["verified_tensors"] == len(scan(model_dir))
    assert summary["pulled_bytes"] == summary["bytes"] > 0 and summary["tensors_from_disk"] == 0
    assert {"link", "manifest", "transfer", "verify"} <= set(summary["phases"]) and "disk" not in summary["phases"]
    gone = cli("--source", dead, "--source", src.endpoint)  # the live one has stopped too
    assert gone.returncode == 3 and "Traceback" not in gone.stderr
    assert gone.stderr.count("\n") == 1 and gone.stderr.startswith("error: no source answered with its tensor layout")
    assert f"{dead}: " in gone.stderr and f"{src.endpoint}: " in gone.stderr


def test_row_sum_verification_reads_back_per_batch_not_per_tensor(
    tmp_path: Path, engine: NixlEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1500 small tensors from a row-sum-64 source: the device is read back once per arrived chunk that
    completes tensors (a handful), not once per tensor; every tensor is still checked."""
    many = {
        f"layers.{i}.weight": torch.randn(1000 + i % 7, generator=torch.Generator().manual_seed(i)) for i in range(1500)
    }
    model = tmp_path / "many"
    write(model, many, files=2)
    with sources(tmp_path, 1, "--model-dir", str(model), env={"MX_CHECKSUM_ALGORITHM": "row-sum-64"}) as (src,):
        layout = _target(model, engine)
        read_backs = count_read_backs(monkeypatch)
        result = pull(layout, IDENTITY, [src.endpoint], engine, FAST)
    syncs = len(read_backs)
    chunks = -(-layout.total_bytes // FAST.chunk_bytes) + 8  # READs (the last ones taper) bound the batches
    assert 1 <= syncs <= chunks < len(many) // 20, (syncs, chunks)
    assert result.verification == "full" and result.verified_bytes == result.bytes == layout.total_bytes
    assert result.refetched_tensors == 0 and not result.failed_sources  # no healthy tensor misjudged
    _assert_identical(layout.tensors, many)


@pytest.mark.parametrize("corrupt_first", [False, True])
def test_row_sum_chunks_that_land_while_the_verify_thread_is_busy_are_judged_together(
    engine: NixlEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt_first: bool
) -> None:
    """The verify thread is slowed, so READs land faster than it judges them: it takes the chunks
    that landed meanwhile in one batch. Tensors of whole 4 KiB rows, so each chunk's rows are summed
    as it lands (not whole at the end). Every verdict still lands on its own tensor: from healthy
    sources nothing is fetched twice; with a corrupt source striped in, its tensors are caught and
    repaired from the healthy one, and the model ends bit-identical either way."""
    original = {
        f"layers.{i}.weight": torch.randn(16384 * (1 + i % 3), generator=torch.Generator().manual_seed(i))
        for i in range(96)
    }  # 64-192 KiB each, 12 MiB: a dozen 1 MiB chunks, each holding whole tensors
    model_dir = tmp_path / "rows"
    write(model_dir, original, files=2)
    batches: list[int] = []
    judge = RowSumRuns.judge_planned

    def slowly(self: Any, batch: list[Any]) -> None:
        batches.append(len(batch))
        time.sleep(0.005)
        judge(self, batch)

    monkeypatch.setattr(RowSumRuns, "judge_planned", slowly)
    row_sums = {"MX_CHECKSUM_ALGORITHM": "row-sum-64"}
    first_args = ("--model-dir", str(model_dir), *(["--corrupt"] if corrupt_first else []))
    with (
        sources(tmp_path, 1, *first_args, env=row_sums) as (first,),
        sources(tmp_path, 1, "--model-dir", str(model_dir), env=row_sums) as (second,),
    ):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [first.endpoint, second.endpoint], engine, FAST)
    assert max(batches) > 1, f"every chunk was judged alone: {batches}"
    assert not result.fell_back and result.verified_bytes == result.bytes == layout.total_bytes
    if corrupt_first:
        assert result.refetched_tensors >= 1 and first.endpoint in result.failed_sources
    else:
        assert result.refetched_tensors == 0 and not result.failed_sources
    _assert_identical(layout.tensors, original)


@pytest.mark.parametrize("algorithm", ["xxh3-64", "row-sum-64"])
def test_sampled_verification_checks_a_fraction_and_escalates_on_a_corrupt_tensor(
    model_dir: Path,
    original: dict[str, torch.Tensor],
    engine: NixlEngine,
    tmp_path: Path,
    algorithm: str,
) -> None:
    sampled = PullOptions(**{**FAST.__dict__, "verification": "sampled", "sample_fraction": 0.25})
    env = {"MX_CHECKSUM_ALGORITHM": algorithm}
    with sources(tmp_path, 1, "--model-dir", str(model_dir), env=env) as (good,):
        layout = _target(model_dir, engine)
        clean = pull(layout, IDENTITY, [good.endpoint], engine, sampled)
    assert clean.verification == "sampled (25% of bytes)" or clean.verification.startswith("sampled (")
    assert 0.25 * clean.bytes <= clean.verified_bytes < clean.bytes and clean.unchecked_tensors > 0
    _assert_identical(layout.tensors, original)
    # A source that corrupts every tensor is caught by the sample; then every tensor is checked and
    # the bad ones come again from the healthy source. It flips each tensor's first byte, so only the
    # tensors whose first chunk it delivered are bad, about half: a sample of a quarter of the bytes
    # (~5 tensors here) missed all of them now and then on a loaded machine; 60% (~13) does not.
    sampled = dataclasses.replace(sampled, sample_fraction=0.6)
    with (
        sources(tmp_path, 1, "--model-dir", str(model_dir), "--corrupt", env=env) as (bad,),
        sources(tmp_path, 1, "--model-dir", str(model_dir), env=env) as (good,),
    ):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [bad.endpoint, good.endpoint], engine, sampled)
    assert result.verification == "full" and result.refetched_tensors >= 1 and not result.fell_back
    _assert_identical(layout.tensors, original)


def test_over_an_asynchronous_transport_the_loop_sleeps_a_fraction_of_a_read(
    model_dir: Path, original: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TCP (as into GPU memory or over RDMA) READs complete after their post and the loop polls:
    it sleeps, and no sleep after the first READ landed exceeds a fraction of the READ times seen."""
    tcp = {"UCX_TLS": "tcp,self"}
    monkeypatch.setenv("UCX_TLS", tcp["UCX_TLS"])
    sleeps: list[tuple[float, float]] = []
    plain_next = Backoff.next

    def spied(self: Backoff, oldest_age: float) -> float:
        sleep = plain_next(self, oldest_age)
        if self.read_seconds is not None:
            sleeps.append((sleep, self.read_seconds))
        return sleep

    monkeypatch.setattr(Backoff, "next", spied)
    engine = NixlEngine()  # UCX reads UCX_TLS as the agent is made
    try:
        with sources(tmp_path, 1, "--model-dir", str(model_dir), env=tcp) as (source,):
            layout = _target(model_dir, engine)
            result = pull(layout, IDENTITY, [source.endpoint], engine, FAST)
    finally:
        engine.deregister_all()
    assert result.sources == [source.endpoint] and not result.fell_back
    _assert_identical(layout.tensors, original)
    assert sleeps, "the loop never slept with READs in flight: the transport copied inside the post"
    assert all(sleep <= max(FLOOR, read * FRACTION) + 1e-12 for sleep, read in sleeps)


def test_verification_off_trusts_the_bytes_and_says_so(model_dir: Path, engine: NixlEngine, tmp_path: Path) -> None:
    off = PullOptions(**{**FAST.__dict__, "verification": "off"})
    with sources(tmp_path, 1, "--model-dir", str(model_dir), "--corrupt") as (bad,):
        layout = _target(model_dir, engine)
        result = pull(layout, IDENTITY, [bad.endpoint], engine, off)
    # nothing was checked, and the result says so: the corruption went through (the trade `off` makes)
    assert result.verification == "off" and result.verified_bytes == 0 and result.unchecked_tensors == 39
    with pytest.raises(ValueError, match="verification 'some'"):
        PullOptions(verification="some")  # type: ignore[arg-type]
