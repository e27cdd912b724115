#!/usr/bin/env bash
# The whole GPU check of issue 22 in one run on a lent GPU machine (see ../shared/gpu/README.md).
# Before the run, on the development machine:
#   echo /.gpu/ >> .git/info/exclude
#   mkdir -p .gpu && cp ../shared/gpu/site-py312-nixl.tar.xz ../shared/gpu/gpu_checks.py .gpu/
#   bash hack/gpu-check.sh --rehearse    # the same steps on this machine's CPU, small (about two minutes)
# then run `bash hack/gpu-check.sh` there with carry [".gpu"] and a timeout that leaves time to rerun.
# It prints: batched row-sum-64 against the per-tensor reference on the GPU (values must be equal),
# the pull benchmark on GPU memory (ours verified / unverified / raw NIXL / copy / set-up per layout),
# gpu_checks.py's correctness checks (bit-identical pulls, corruption repaired and refused), and last
# the 100k-tensor layout (`moe`: batched row sums and a pull, where work per tensor would show).
# --rehearse runs every step on host memory with the project's virtualenv and row-sum-64 forced (the
# algorithm GPU sources use), so that a script or API drift shows here, not on the lent machine's clock.
set -euo pipefail
cd "$(dirname "$0")/.."
checks=.gpu/gpu_checks.py
if [[ "${1:-}" == "--rehearse" ]]; then
  [[ -f "$checks" ]] || checks=../shared/gpu/gpu_checks.py
  export PYTHONPATH="$PWD/worker" PYTHONUNBUFFERED=1 MX_CHECKSUM_ALGORITHM=row-sum-64
  python=.venv/bin/python
  "$python" bench/rowsums.py --device cpu --mib 64 --reps 1
  "$python" bench/p2p_pull.py --device cpu --layouts large,small --mib 128 --reps 1 --checksum row-sum-64
  DEV=cpu LAYERS=6 VOCAB=1000 "$python" "$checks"
  "$python" bench/rowsums.py --device cpu --mib 128 --reps 1 --layouts moe
  "$python" bench/p2p_pull.py --device cpu --layouts large,moe --mib 128 --reps 1 --checksum row-sum-64
  exit 0
fi
site="${MX_GPU_SITE:-/tmp/mx-site}"
mkdir -p "$site"
tar -xJf .gpu/site-py312-nixl.tar.xz -C "$site"
export PYTHONPATH="$site:$PWD/worker" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 bench/rowsums.py --device cuda --mib 2048 --reps 3
python3 bench/p2p_pull.py --device cuda --layouts llama8b,large --mib 8192 --reps 3
python3 bench/p2p_pull.py --device cuda --layouts large,small --mib 1024 --reps 3
python3 "$checks"
python3 bench/rowsums.py --device cuda --mib 1024 --reps 1 --layouts moe
python3 bench/p2p_pull.py --device cuda --layouts large,moe --mib 1024 --reps 2
