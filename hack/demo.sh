#!/usr/bin/env bash
# The main job on the embedded default (no cluster): what this version of ModelExpress can do on one
# machine. Today: generate the configuration, validate it, and show how the layers combine.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== modelexpress $(modelexpress --version | cut -d' ' -f2)"
echo "== 1. generate a configuration file with every option and its default"
modelexpress config generate --output "$work/model-express.yaml"
grep -v '^ *#' "$work/model-express.yaml"

echo "== 2. validate it"
modelexpress config validate "$work/model-express.yaml"

echo "== 3. layers: file (port 7000) < env (MODEL_EXPRESS_LOG_LEVEL=debug) < flag (--port 9001)"
sed -i 's/port: 8001/port: 7000/' "$work/model-express.yaml"
MODEL_EXPRESS_LOG_LEVEL=debug modelexpress server --config "$work/model-express.yaml" --port 9001 --validate-config
MODEL_EXPRESS_LOG_LEVEL=debug modelexpress config show --config "$work/model-express.yaml" --port 9001 \
  | grep -E '^(server|logging):|^  (port|level):'

echo "== 4. a bad value is refused, naming the option"
printf 'server:\n  port: 70000\n' > "$work/bad.yaml"
if modelexpress config validate "$work/bad.yaml"; then echo "unexpected: bad config accepted" >&2; exit 1; fi
echo "== demo complete"
