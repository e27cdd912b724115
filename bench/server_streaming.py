"""Streaming a model's files over gRPC on loopback against reading them from disk, at two chunk sizes.

A `modelexpress server` process serves a model of N safetensors-sized files from its cache. The same
run measures, best of `--repeat` each:

- disk: reading the files in 1 MiB blocks (page cache warm, as the server sees them);
- stream@32KiB, stream@1MiB: `StreamModelFiles` consumed by a client that only counts the bytes;
- receive@32KiB, receive@1MiB: `receive_model` (per-chunk checks, `.incomplete` file, fsync, rename)
  into a fresh directory, against `copy`: the same files copied on disk with fsync.

Prints each rate and the ratios stream/disk and receive/copy.

Usage: python bench/server_streaming.py [--gib 2] [--files 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import best_of  # noqa: E402 - bench/ is on sys.path when a benchmark runs

from modelexpress._proto.modelexpress.v1 import server_pb2, server_pb2_grpc  # noqa: E402
from modelexpress.cache.database import CacheDatabase, CachedModel  # noqa: E402
from modelexpress.client.receive import receive_model  # noqa: E402

MODEL = "hf://bench/model"


def make_model(cache: Path, db: Path, total: int, count: int) -> Path:
    snapshot = cache / "models--bench--model" / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for index in range(count):
        with (snapshot / f"model-{index + 1:05d}-of-{count:05d}.safetensors").open("wb") as out:
            for _ in range((total // count) >> 20):
                out.write(block)
    files = list(snapshot.iterdir())
    now = time.time()
    database = CacheDatabase(db)
    database.record(
        CachedModel("hf", "bench/model", "main", "c" * 40, str(snapshot), sum(f.stat().st_size for f in files),
                    len(files), now, now)
    )  # fmt: skip
    database.close()
    return snapshot


def start_server(cache: Path, db: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "MODEL_EXPRESS_CACHE_DIRECTORY": str(cache), "MODEL_EXPRESS_DATABASE_PATH": str(db),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelexpress.cli.main", "server", "--host", "127.0.0.1", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, line.rsplit(" ", 1)[1].strip()
    raise RuntimeError("the server did not start")


def report(rates: dict[str, float], nbytes: int, files: int, repeat: int) -> None:
    print(f"{nbytes / 2**30:.2f} GiB in {files} files, best of {repeat}")
    for name, rate in rates.items():
        print(f"  {name:16} {rate / 1e9:6.2f} GB/s")
    for label in ("32KiB", "1MiB"):
        print(f"  ratio stream@{label}/disk   = {rates[f'stream@{label}'] / rates['disk']:.3f}")
        print(f"  ratio receive@{label}/copy  = {rates[f'receive@{label}'] / rates['copy']:.3f}")
    print(f"  ratio stream@1MiB/stream@32KiB   = {rates['stream@1MiB'] / rates['stream@32KiB']:.2f}")
    print(f"  ratio receive@1MiB/receive@32KiB = {rates['receive@1MiB'] / rates['receive@32KiB']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = int(args.gib * 2**30)
    work = Path(tempfile.mkdtemp(prefix="mx-bench-stream-"))
    proc = None
    try:
        cache, db = work / "cache", work / "models.db"
        snapshot = make_model(cache, db, total, args.files)
        nbytes = sum(f.stat().st_size for f in snapshot.iterdir())
        proc, endpoint = start_server(cache, db)
        channel = grpc.insecure_channel(endpoint, options=[("grpc.max_receive_message_length", 16 << 20)])
        stub = server_pb2_grpc.ModelServiceStub(channel)

        def disk() -> None:
            for path in sorted(snapshot.iterdir()):
                with path.open("rb") as f:
                    while f.read(1 << 20):
                        pass

        def copy() -> None:
            out = work / "copy"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            for path in sorted(snapshot.iterdir()):
                with path.open("rb") as src, (out / path.name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())

        def stream(chunk: int) -> None:
            got = 0
            for message in stub.StreamModelFiles(server_pb2.ModelFilesRequest(model_name=MODEL, chunk_size=chunk)):
                got += len(message.data)
            assert got == nbytes, (got, nbytes)

        def receive(chunk: int) -> None:
            out = work / "received"
            shutil.rmtree(out, ignore_errors=True)
            result = receive_model(channel, MODEL, "main", out, chunk, 30)
            assert result.received_bytes == nbytes

        disk()  # warm the page cache for every reader alike
        rates: dict[str, float] = {}
        rates["disk"] = nbytes / best_of(args.repeat, disk)[0]
        rates["copy"] = nbytes / best_of(args.repeat, copy)[0]
        for label, chunk in (("32KiB", 32 << 10), ("1MiB", 1 << 20)):
            rates[f"stream@{label}"] = nbytes / best_of(args.repeat, lambda c=chunk: stream(c))[0]
            rates[f"receive@{label}"] = nbytes / best_of(args.repeat, lambda c=chunk: receive(c))[0]
        report(rates, nbytes, args.files, args.repeat)
        channel.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
