#!/usr/bin/env bash
# `make test`: the whole suite as two pytest processes at once. The real-vLLM modules (replicas that
# keep the CPU busy, no control plane) run beside everything else (mostly waiting on the control
# plane, on peers and on Jobs), which about halves the wall time on a 2-core machine (22 -> 12 min
# here, side by side in the same hour).
# The vLLM run's report follows the other's; the exit status is non-zero when either failed.
# Arguments go to both runs (`bash hack/test.sh -x`); for a subset, call pytest itself.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PY:-.venv/bin/python}"
vllm=(tests/integration/test_vllm_*.py)
log="$(mktemp -t mx-vllm-tests.XXXXXX)"
"$py" -m pytest "${vllm[@]}" "$@" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
rest=0
"$py" -m pytest "${vllm[@]/#/--ignore=}" "$@" || rest=$?
vllm_status=0
wait "$pid" || vllm_status=$?
echo
echo "================ the real-vLLM modules (run beside the above) ================"
cat "$log"
echo "test: the rest exited $rest, the real-vLLM modules exited $vllm_status"
[[ $rest -eq 0 && $vllm_status -eq 0 ]]
