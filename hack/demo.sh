#!/usr/bin/env bash
# The main job on the embedded default (no cluster): peer-to-peer weight transfer over NIXL between
# processes on this machine, with sources found through the embedded (SQLite) registry.
#  1. generate a small safetensors model;
#  2. worker A loads it from disk and serves it (NIXL + WorkerService), recording itself as a source;
#  3. worker B finds A in the registry, pulls every tensor over NIXL, verifies checksums, and
#     becomes a source itself;
#  4. worker C finds A and B and stripes its READs across both.
set -euo pipefail
work=$(mktemp -d)
pids=()
cleanup_workers() {  # stop the serving workers one at a time, so their last lines never interleave
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  cleanup_workers
  rm -rf "$work"
}
trap cleanup EXIT
export MX_REGISTRY_PATH="$work/sources.db" MX_WORKER_HOST=127.0.0.1 NIXL_LOG_LEVEL=${NIXL_LOG_LEVEL:-WARN}
model="$work/model"
name=demo/tiny-llama

wait_ready() {
  for _ in $(seq 600); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "demo: a worker did not become Ready" >&2; return 1
}

echo "== 1. generate a small model"
python "$(dirname "$0")/make_tiny_model.py" "$model" --layers 8 --hidden 768 --files 2

echo "== 2. worker A: load from disk and serve"
modelexpress worker serve "$model" --model-name "$name" --ready-file "$work/a.ready" --log-level warn &
pids+=($!)
wait_ready "$work/a.ready"

echo "== 3. worker B: pull from A over NIXL, then serve"
modelexpress worker pull --model-name "$name" --model-dir "$model" --serve-after --ready-file "$work/b.ready" --log-level warn &
pids+=($!)
wait_ready "$work/b.ready"

echo "== 4. worker C: pull striped across A and B"
modelexpress worker pull --model-name "$name" --model-dir "$model" --log-level warn

echo "== 5. stop A and B (each says what its peers pulled from it)"
cleanup_workers
echo "== demo complete"
