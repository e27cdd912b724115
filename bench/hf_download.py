"""Download throughput from a local Hugging Face Hub server: our downloader vs a plain parallel HTTP fetch.

The server (`tests/helpers/fake_hub.py`, its own process) serves 8 safetensors-sized files. The
same run measures, best of N each, after dropping the previous copy:

- ours: `plan_download` + `download` (metadata, commit pinning, hub layout, Range-capable transfer
  into `.incomplete`, size and sha256 verification, rename, snapshot links), 8 files in parallel;
- baseline: 8 threads copying the same URLs straight into files (urllib; no verification, no layout).

Prints both rates and the ratio (issue target: >= 0.8).

Usage: python bench/hf_download.py [--gib 2] [--files 8] [--repeat 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelexpress.cache import huggingface  # noqa: E402


def make_files(directory: Path, total: int, count: int) -> None:
    block = os.urandom(1 << 20)
    per_file = total // count
    for index in range(count):
        with (directory / f"model-{index + 1:05d}-of-{count:05d}.safetensors").open("wb") as out:
            for _ in range(per_file >> 20):
                out.write(block)


def plain_fetch(endpoint: str, repo: str, commit: str, names: list[str], target: Path) -> float:
    """The baseline: one thread per file copying the HTTP body straight into a file (urllib: the fastest
    plain client measured here; httpx streaming reached less than half of it)."""
    target.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> None:
        with (
            urllib.request.urlopen(f"{endpoint}/{repo}/resolve/{commit}/{name}", timeout=60) as response,
            (target / name).open("wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mx-bench-hf-"))
    source = work / "repo"
    source.mkdir()
    total = int(args.gib * (1 << 30))
    make_files(source, total, args.files)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_hub", "--repo", f"bench/model={source}"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip()
        plan = huggingface.plan_download("bench/model", endpoint=endpoint)
        names = [f.path for f in plan.files]
        ours, plain = [], []
        for round_ in range(args.repeat):
            # Alternate which goes first, so neither always pays for the other's disk writeback.
            for which in ("ours", "plain") if round_ % 2 == 0 else ("plain", "ours"):
                shutil.rmtree(work / which, ignore_errors=True)
                os.sync()
                if which == "ours":
                    ours.append(
                        huggingface.download(plan, work / "ours", endpoint=endpoint, max_workers=args.files).seconds
                    )
                else:
                    plain.append(plain_fetch(endpoint, "bench/model", plan.commit, names, work / "plain"))
        size = plan.total_bytes
        best_ours, best_plain = min(ours), min(plain)
        print(f"{args.files} files, {size / 2**30:.2f} GiB from a local hub server (best of {args.repeat})")
        print(f"  plain parallel HTTP fetch:     {size / best_plain / 1e9:6.2f} GB/s ({best_plain:.2f} s)")
        print(f"  modelexpress (verified, hub):  {size / best_ours / 1e9:6.2f} GB/s ({best_ours:.2f} s)")
        print(f"  ratio ours/plain: {best_plain / best_ours:.2f} (target >= 0.8)")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
