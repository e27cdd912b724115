#!/usr/bin/env bash
# End to end on a kind cluster: build and load the images, install the chart, download a model
# into a ModelCache from an in-cluster fake hub, start two CPU workers and see the second pull the
# weights from the first over NIXL, recorded in a ModelMetadata.
#
#   hack/kind-e2e.sh            # needs a Docker engine; kind, kubectl and helm are fetched if missing
#   KEEP_CLUSTER=1 hack/kind-e2e.sh   # leave the cluster up for a look around
#
# Without a Docker engine it says so and exits 0 (skipped), so `make e2e` is safe everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-mx-e2e}
KIND_VERSION=${KIND_VERSION:-v0.30.0}
HELM_VERSION=${HELM_VERSION:-v3.19.0}
KUBECTL_VERSION=${KUBECTL_VERSION:-v1.34.1}
BIN="$PWD/.cache/e2e-bin"
TIMEOUT=${TIMEOUT:-300s}

log() { printf '\n== %s\n' "$*"; }

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "kind-e2e: skipped: no Docker engine on this machine (docker info failed)"
  exit 0
fi

fetch() { # name url
  local name=$1 url=$2
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return
  fi
  mkdir -p "$BIN"
  if [[ ! -x "$BIN/$name" ]]; then
    echo "kind-e2e: downloading $name from $url" >&2
    curl -fsSL "$url" -o "$BIN/$name.download"
    if [[ $url == *.tar.gz ]]; then
      tar -xzf "$BIN/$name.download" -C "$BIN" --strip-components=1 "linux-amd64/$name"
      rm -f "$BIN/$name.download"
    else
      mv "$BIN/$name.download" "$BIN/$name"
    fi
    chmod +x "$BIN/$name"
  fi
  echo "$BIN/$name"
}

KIND=$(fetch kind "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-amd64")
KUBECTL=$(fetch kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl")
HELM=$(fetch helm "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz")
export KUBECONFIG="$PWD/.cache/kind-e2e.kubeconfig"

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    echo "kind-e2e: failed; state of the cluster:" >&2
    "$KUBECTL" get pods,jobs,pvc,modelcaches,modelmetadatas -A -o wide >&2 || true
    "$KUBECTL" -n mx-system logs deploy/modelexpress-operator --tail=100 >&2 || true
    "$KUBECTL" -n mx-e2e logs worker-b --tail=50 >&2 || true
  fi
  if [[ -z ${KEEP_CLUSTER:-} ]]; then
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
"$KIND" create cluster --name "$CLUSTER" --wait 120s

log "images"
# As users build them (hack/images.sh: a wheelhouse, then the Dockerfiles), named as values-kind.yaml says.
IMAGE_PREFIX="" IMAGE_TAG=dev bash hack/images.sh
"$KIND" load image-archive --name "$CLUSTER" .cache/images/modelexpress-operator.tar
"$KIND" load image-archive --name "$CLUSTER" .cache/images/modelexpress-worker.tar

log "chart"
"$KUBECTL" create namespace mx-e2e
"$HELM" install modelexpress charts/modelexpress --namespace mx-system --create-namespace \
  -f charts/modelexpress/values-development.yaml -f hack/e2e/values-kind.yaml --wait --timeout "$TIMEOUT"

log "fake hub"
"$KUBECTL" -n mx-e2e create configmap fake-hub-scripts \
  --from-file=fake_hub.py=tests/helpers/fake_hub.py --from-file=make_tiny_model.py=hack/make_tiny_model.py
"$KUBECTL" apply -f hack/e2e/fake-hub.yaml
"$KUBECTL" -n mx-e2e rollout status deploy/fake-hub --timeout "$TIMEOUT"

log "ModelCache and ModelMetadata"
"$KUBECTL" apply -f hack/e2e/model.yaml
"$KUBECTL" -n mx-e2e wait --for=condition=Ready modelcache/tiny --timeout "$TIMEOUT"
"$KUBECTL" -n mx-e2e get modelcache tiny -o wide

log "worker A serves from the cache, worker B pulls from A"
"$KUBECTL" apply -f hack/e2e/workers.yaml
"$KUBECTL" -n mx-e2e wait --for=condition=Ready pod/worker-a --timeout "$TIMEOUT"
"$KUBECTL" -n mx-e2e wait --for=condition=Ready pod/worker-b --timeout "$TIMEOUT"
"$KUBECTL" -n mx-e2e logs worker-b | tee /dev/stderr | grep -q "from 1 source(s); all checksums verified"
"$KUBECTL" -n mx-e2e get pod worker-b -o jsonpath='{.spec.containers[0].env[*].name}' | grep -q VLLM_PLUGINS

log "kubectl get modelmetadatas"
for _ in $(seq 60); do
  ready=$("$KUBECTL" -n mx-e2e get modelmetadata tiny -o jsonpath='{.status.readyReplicas}')
  [[ ${ready:-0} -ge 2 ]] && break
  sleep 2
done
"$KUBECTL" -n mx-e2e get modelmetadatas
[[ ${ready:-0} -ge 2 ]] || { echo "kind-e2e: the ModelMetadata did not record both workers" >&2; exit 1; }

log "passed"
