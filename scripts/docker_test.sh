#!/usr/bin/env bash
# make docker-test: build the three images (api, train CPU, train CUDA) and test them end to end.
#
#   1. a Docker engine: the running one, or dockerd started here (root) and stopped at the end;
#   2. base images: the official ones when they can be pulled, otherwise a local Debian base made with
#      mmdebstrap (python3 + venv, built once and reused, so the layers above it stay cached);
#   3. builds with BuildKit: this host's pip configuration (local indexes included) reaches the builds through
#      scripts/pip_mirror.py and two build secrets (pip.conf, the CA bundle), never baked into a layer;
#   4. the CPU training image trains 1 epoch on data=synthetic; the checkpoint must load on the host with
#      torch.load(weights_only=True); the same image exports it to ONNX;
#   5. the API image serves that model with PORT=9123 (Cloud Run's contract): /ready, a sprite POSTed to
#      /predict, a non-root process, no torch; then SIGTERM (docker stop -t 10) must exit 0 within 10 s;
#   6. the CUDA training image imports torch (CUDA build) and pokedex;
#   7. image sizes: the API image against its goal (API_GOAL_MB, reported) and a hard limit (API_MAX_MB, fails).
#
# Disk: each training image is ~7 GB (the pinned torch wheel bundles CUDA). With less than FULL_GB free under
# the engine's root, the images are built one at a time and each training image (with its build cache) is
# removed once checked ("lean"); with less than LEAN_GB, the test is skipped with a loud warning.
#
# Environment: PY (host Python with pokedex installed, default .venv/bin/python), TAG (image tag, default dev),
# API_GOAL_MB (400), API_MAX_MB (500), LOCAL_BASE (default pokedex-base:bookworm), REBUILD_BASE=1 (remake it),
# FULL_GB (34), LEAN_GB (14: a cold lean run peaked at 8 GB), SKIP_WITHOUT_ENGINE=1 (no engine can start: warn, exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
TAG=${TAG:-dev}
API_GOAL_MB=${API_GOAL_MB:-400}
API_MAX_MB=${API_MAX_MB:-500}
LOCAL_BASE=${LOCAL_BASE:-pokedex-base:bookworm}
REBUILD_BASE=${REBUILD_BASE:-0}
CONTAINER_PORT=9123
STOP_LIMIT_S=10
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
FULL_GB=${FULL_GB:-34}
LEAN_GB=${LEAN_GB:-14}
LEAN=0
DISK_ROOT=/var/lib  # where the engine keeps images and build cache (check_disk finds it)

WORK=$(mktemp -d -t pokedex-docker-test.XXXXXX)
DOCKER=docker
BUILD=()
STRIP_SYNTAX=0
DOCKERD_PID=""
MIRROR_PID=""
CONTAINERS=()
declare -A BUILD_SECONDS=() IMAGE_MB=()

section() { printf '\n::: %s\n' "$*"; }
log() { printf '    %s\n' "$*"; }
die() {
  printf 'docker-test: FAILED: %s\n' "$*" >&2
  exit 1
}
# This machine cannot run Docker at all (no engine can start): a limit of the machine, not a failure of the
# images. With SKIP_WITHOUT_ENGINE=1 (what .ci/run sets) that is a loud warning and exit 0, like too little disk.
no_engine() {
  if [[ "${SKIP_WITHOUT_ENGINE:-0}" == 1 ]]; then
    echo "::warning:: make docker-test skipped: $*"
    exit 0
  fi
  die "$*"
}

# shellcheck disable=SC2317  # run by the EXIT trap, which shellcheck does not follow
cleanup() {
  local status=$?
  set +e
  for name in "${CONTAINERS[@]}"; do "$DOCKER" rm -f "$name" >/dev/null 2>&1; done
  [[ -n "$MIRROR_PID" ]] && stop_pip_mirror
  if [[ -n "$DOCKERD_PID" ]]; then
    kill "$DOCKERD_PID" 2>/dev/null
    wait "$DOCKERD_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the engine and a BuildKit-capable client --------------------------------------------------------------
start_engine() {
  section "docker engine"
  if docker info >/dev/null 2>&1; then
    log "using the running engine"
    return
  fi
  command -v dockerd >/dev/null || no_engine "no Docker engine runs and dockerd is not installed (Debian: apt-get install docker.io)"
  ((EUID == 0)) || no_engine "no Docker engine runs; starting dockerd needs root"
  dockerd >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local waited=0
  until docker info >/dev/null 2>&1; do
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dockerd.log"; no_engine "dockerd exited"; }
    ((waited++ < 60)) || no_engine "dockerd did not answer within 60 s"
    sleep 1
  done
  log "started dockerd (pid $DOCKERD_PID), ready after ${waited} s"
}

# BuildKit is needed (RUN --mount). A client with the buildx plugin uses it; a classic client (< 23) asks the
# engine's built-in BuildKit (DOCKER_BUILDKIT=1). Newer clients without buildx cannot use BuildKit at all.
pick_builder() {
  local client version
  for client in docker /usr/bin/docker; do
    command -v "$client" >/dev/null || continue
    if "$client" buildx version >/dev/null 2>&1; then
      BUILD=("$client" buildx build --load)
    else
      version=$("$client" version --format '{{.Client.Version}}' 2>/dev/null || echo 99)
      ((${version%%.*} < 23)) && BUILD=(env DOCKER_BUILDKIT=1 "$client" build)
    fi
    if ((${#BUILD[@]})); then
      DOCKER=$client
      break
    fi
  done
  ((${#BUILD[@]})) || die "BuildKit needed: install the docker buildx plugin (or use a docker client older than 23)"
  log "builder: ${BUILD[*]}"
}

# --- disk ------------------------------------------------------------------------------------------------
free_gb() { df -BG --output=avail "$1" | tail -1 | tr -dc 0-9; }

# Returns 1 (skip the test) when there is no room even for one training image at a time.
check_disk() {
  section "disk"
  local root free
  root=$("$DOCKER" info -f '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)
  [[ -d "$root" ]] && DISK_ROOT=$root
  free=$(free_gb "$DISK_ROOT")
  if ((free < LEAN_GB)); then
    echo "::warning:: make docker-test skipped: ${free} GB free under $DISK_ROOT, it needs ${LEAN_GB} GB (FULL_GB=${FULL_GB} to keep all images)"
    return 1
  fi
  if ((free < FULL_GB)); then
    LEAN=1
    log "${free} GB free under $DISK_ROOT (< ${FULL_GB} GB): one training image at a time, removed once checked"
  else
    log "${free} GB free under $DISK_ROOT: all images kept (warm rebuilds next time)"
  fi
}

# Lean mode: forget a checked training image and the build cache behind it (the base and API image stay).
discard_image() {
  ((LEAN)) || return 0
  "$DOCKER" rmi "$1:$TAG" >/dev/null
  "$DOCKER" builder prune -af >/dev/null 2>&1 || true
  log "removed $1:$TAG and the build cache: $(free_gb "$DISK_ROOT") GB free"
}

# --- base images -----------------------------------------------------------------------------------------
default_arg() { sed -n "s/^ARG $1=//p" "docker/$2"; }

can_pull() { timeout 120 "$DOCKER" pull -q "$1" >/dev/null 2>&1; }

# A minimal Debian bookworm with Python 3.11 and venv, imported as an image: merged /usr without the usrmerge
# package (which pulls in perl), no recommended packages, no docs, man pages or locales. Made once: a changed
# base would invalidate every layer above it.
build_local_base() {
  if [[ "$REBUILD_BASE" != 1 ]] && "$DOCKER" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    log "reusing the local base $LOCAL_BASE"
    return
  fi
  command -v mmdebstrap >/dev/null || die "the official base cannot be pulled and mmdebstrap is missing (apt-get install mmdebstrap)"
  local start=$SECONDS
  mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm - 2>"$WORK/mmdebstrap.log" |
    "$DOCKER" import --change 'ENV LANG=C.UTF-8' - "$LOCAL_BASE" >/dev/null ||
    { tail -20 "$WORK/mmdebstrap.log"; die "could not build the local base image"; }
  log "built the local base $LOCAL_BASE in $((SECONDS - start)) s"
}

PYTHON_BASE=""
CUDA_BASE=""
pick_bases() {
  section "base images"
  PYTHON_BASE=$(default_arg PYTHON_IMAGE api.dockerfile)
  CUDA_BASE=$(default_arg CUDA_IMAGE train-cuda.dockerfile)
  if can_pull "$PYTHON_BASE"; then
    log "official bases: $PYTHON_BASE, $CUDA_BASE"
    can_pull "$CUDA_BASE" || die "pulled $PYTHON_BASE but not $CUDA_BASE"
  else
    log "cannot pull $PYTHON_BASE: building on a local Debian base instead (CUDA comes with the torch wheels)"
    build_local_base
    PYTHON_BASE=$LOCAL_BASE CUDA_BASE=$LOCAL_BASE
  fi
  local syntax
  syntax=$(sed -n '1s/^# syntax=//p' docker/api.dockerfile)
  if [[ -n "$syntax" ]] && ! can_pull "$syntax"; then
    STRIP_SYNTAX=1
    log "cannot pull the Dockerfile frontend $syntax: building with the engine's built-in one"
  fi
}

# --- builds ----------------------------------------------------------------------------------------------
start_pip_mirror() {
  "$PY" scripts/pip_mirror.py "$WORK/pip" &
  MIRROR_PID=$!
  local waited=0
  until [[ -s "$WORK/pip/port" ]]; do
    kill -0 "$MIRROR_PID" 2>/dev/null || die "scripts/pip_mirror.py exited"
    ((waited++ < 100)) || die "scripts/pip_mirror.py did not start"
    sleep 0.1
  done
  log "pip configuration for the builds: local indexes served on 127.0.0.1:$(cat "$WORK/pip/port")"
}

stop_pip_mirror() {
  kill "$MIRROR_PID" 2>/dev/null
  wait "$MIRROR_PID" 2>/dev/null || true
  MIRROR_PID=""
}

# build_image IMAGE DOCKERFILE [--build-arg K=V ...]
build_image() {
  local image=$1 dockerfile=docker/$2
  shift 2
  if ((STRIP_SYNTAX)); then
    sed '1{/^# syntax=/d}' "$dockerfile" >"$WORK/${dockerfile##*/}"
    dockerfile=$WORK/${dockerfile##*/}
  fi
  local secrets=(--secret "id=pip.conf,src=$WORK/pip/pip.conf")
  [[ -f "$CA_BUNDLE" ]] && secrets+=(--secret "id=ca.crt,src=$CA_BUNDLE")
  local start=$SECONDS log_file="$WORK/build-${image}.log"
  if ! "${BUILD[@]}" --progress=plain --network=host "${secrets[@]}" "$@" \
    -f "$dockerfile" -t "$image:$TAG" . >"$log_file" 2>&1; then
    tail -40 "$log_file"
    die "building $image:$TAG failed (log above)"
  fi
  BUILD_SECONDS[$image]=$((SECONDS - start))
  IMAGE_MB[$image]=$(("$("$DOCKER" image inspect -f '{{.Size}}' "$image:$TAG")" / 1000000))
  log "built $image:$TAG in ${BUILD_SECONDS[$image]} s ($(grep -c ' CACHED$' "$log_file" || true) cached steps): ${IMAGE_MB[$image]} MB"
}

# --- training image ----------------------------------------------------------------------------------------
# Folders the containers write into: they run as uid 10001, so the test's folders are open to them.
shared_dir() {
  mkdir -p "$WORK/$1"
  chmod 0777 "$WORK/$1"
}

train_smoke() {
  section "train image: 1 epoch on data=synthetic, checkpoint loaded on the host, ONNX export"
  shared_dir data
  shared_dir outputs
  shared_dir models
  local mounts=(-v "$WORK/data:/app/data" -v "$WORK/outputs:/app/outputs" -v "$WORK/models:/app/models")
  local start=$SECONDS
  "$DOCKER" run --rm "${mounts[@]}" "pokedex-train:$TAG" \
    data=synthetic trainer=cpu trainer.max_epochs=1 trainer.num_sanity_val_steps=0 \
    callbacks.progress_bar=null hydra.run.dir=/app/outputs/smoke >"$WORK/train.log" 2>&1 ||
    { tail -40 "$WORK/train.log"; die "training in pokedex-train:$TAG failed"; }
  log "trained 1 epoch in the container in $((SECONDS - start)) s"
  local ckpt="$WORK/outputs/smoke/checkpoints/best.ckpt"
  [[ -s "$ckpt" ]] || die "no checkpoint at outputs/smoke/checkpoints/best.ckpt"
  "$PY" - "$ckpt" <<'PY' || die "the checkpoint does not load with torch.load(weights_only=True)"
import sys

import torch

ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
meta = ckpt["pokedex"]
print(f"    checkpoint loads with torch.load(weights_only=True): epoch {ckpt['epoch']}, "
      f"{len(ckpt['state_dict'])} tensors, {len(meta['class_names'])} classes")
PY
  "$DOCKER" run --rm "${mounts[@]}" --entrypoint python "pokedex-train:$TAG" -m pokedex.export \
    ckpt_path=/app/outputs/smoke/checkpoints/best.ckpt output=/app/models/model.onnx \
    hydra.run.dir=/app/outputs/export >"$WORK/export.log" 2>&1 ||
    { tail -40 "$WORK/export.log"; die "export in pokedex-train:$TAG failed"; }
  [[ -s "$WORK/models/model.onnx" && -s "$WORK/models/model.json" ]] || die "export wrote no model.onnx + model.json"
  log "exported models/model.onnx ($(du -k "$WORK/models/model.onnx" | cut -f1) KiB) with the training image"
}

# --- CUDA training image -----------------------------------------------------------------------------------
# No GPU here: the check is that the image's torch is the CUDA build and the training entry point imports.
cuda_smoke() {
  section "train-cuda image: torch (CUDA build) and the training entry point import"
  "$DOCKER" run --rm --entrypoint python "pokedex-train-cuda:$TAG" -c \
    "import torch, pokedex.train; assert torch.version.cuda, 'torch without CUDA'; print(f'    torch {torch.__version__}, built for CUDA {torch.version.cuda}; pokedex.train imports')" ||
    die "pokedex-train-cuda:$TAG: torch (CUDA) or pokedex.train does not import"
}

# --- API image -----------------------------------------------------------------------------------------------
API=""
API_URL=""

wait_ready() {
  local waited=0
  until curl -fsS "$API_URL/ready" >/dev/null 2>&1; do
    [[ "$("$DOCKER" inspect -f '{{.State.Running}}' "$API")" == true ]] ||
      { "$DOCKER" logs "$API" 2>&1 | tail -30; die "the API container exited"; }
    ((waited++ < 120)) || die "/ready did not answer 200 within 60 s"
    sleep 0.5
  done
}

api_start() {
  section "api image: PORT=$CONTAINER_PORT, /ready, a sprite to /predict, non-root, no torch"
  API=pokedex-api-test-$$
  CONTAINERS+=("$API")
  "$DOCKER" run -d --name "$API" -e "PORT=$CONTAINER_PORT" -p "127.0.0.1::$CONTAINER_PORT" \
    -v "$WORK/models:/app/models:ro" "pokedex-api:$TAG" >/dev/null
  # Published from the container's $PORT only: if the app listened elsewhere, nothing would answer here.
  API_URL="http://$("$DOCKER" port "$API" "$CONTAINER_PORT/tcp" | head -1)"
  local start=$SECONDS
  wait_ready
  log "listening on \$PORT=$CONTAINER_PORT (published at $API_URL), /ready 200 after $((SECONDS - start)) s"
}

api_predict() {
  "$PY" - "$WORK/data/synthetic.zip" "$WORK/sprite.png" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as archive:
    name = next(n for n in sorted(archive.namelist()) if n.startswith("test/") and n.endswith(".png"))
    open(sys.argv[2], "wb").write(archive.read(name))
print(f"    sprite: {name}")
PY
  curl -fsS -F "file=@$WORK/sprite.png;type=image/png" "$API_URL/predict?top_k=3" >"$WORK/answer.json" ||
    die "POST /predict failed"
  "$PY" - "$WORK/answer.json" "$WORK/models/model.json" <<'PY' || die "unexpected /predict answer: $(cat "$WORK/answer.json")"
import json
import sys

answer = json.load(open(sys.argv[1]))
classes = json.load(open(sys.argv[2]))["class_names"]
top = answer["predictions"]
assert len(top) == 3, top
assert all(p["label"] in classes for p in top), top
assert [p["probability"] for p in top] == sorted((p["probability"] for p in top), reverse=True), top
print("    /predict top-3: " + ", ".join(f"{p['label']} {p['probability']:.3f}" for p in top)
      + f" (model {answer['model']['name']}, {answer['elapsed_ms']} ms)")
PY
}

api_checks() {
  local uid
  uid=$("$DOCKER" exec "$API" python -c "import os; print(os.stat('/proc/1').st_uid)")
  [[ "$uid" != 0 ]] || die "the API process runs as root"
  log "the server process (PID 1) runs as uid $uid, not root"
  if "$DOCKER" exec "$API" python -c "import torch" >"$WORK/torch.log" 2>&1; then
    die "import torch succeeded in the API image"
  fi
  log "import torch in the API image: $(tail -1 "$WORK/torch.log")"
  log "API container memory after the requests: $("$DOCKER" stats --no-stream --format '{{.MemUsage}}' "$API")"
}

# Cloud Run sends SIGTERM and kills 10 s later: the server must exit by itself, with status 0, before that.
api_sigterm() {
  section "api image: SIGTERM (docker stop -t $STOP_LIMIT_S) exits 0 within $STOP_LIMIT_S s"
  local start end status seconds
  start=$(date +%s.%N)
  "$DOCKER" stop -t "$STOP_LIMIT_S" "$API" >/dev/null
  end=$(date +%s.%N)
  status=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$API")
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
  log "exit code $status after ${seconds} s; last log line: $("$DOCKER" logs "$API" 2>&1 | tail -1)"
  [[ "$status" == 0 ]] || die "exit code $status after SIGTERM (expected 0)"
  awk -v s="$seconds" -v l="$STOP_LIMIT_S" 'BEGIN { exit !(s < l) }' || die "took ${seconds} s to stop"
}

# --- sizes ---------------------------------------------------------------------------------------------------
report_sizes() {
  section "image sizes"
  local image api_mb=${IMAGE_MB[pokedex-api]}
  for image in pokedex-api pokedex-train pokedex-train-cuda; do
    printf '    %-24s %6d MB   (built in %s s)\n' "$image:$TAG" "${IMAGE_MB[$image]}" "${BUILD_SECONDS[$image]}"
  done
  if ((api_mb < API_GOAL_MB)); then
    log "API image: ${api_mb} MB, under the ${API_GOAL_MB} MB goal"
  else
    log "API image: ${api_mb} MB, OVER the ${API_GOAL_MB} MB goal by $((api_mb - API_GOAL_MB)) MB"
  fi
  ((api_mb < API_MAX_MB)) || die "the API image is ${api_mb} MB, over the ${API_MAX_MB} MB limit"
}

main() {
  [[ -x "$PY" ]] || die "$PY not found: run make install first (or set PY=...)"
  command -v curl >/dev/null || die "curl is needed"
  start_engine
  pick_builder
  check_disk || return 0
  pick_bases
  section "build and check, one image at a time: api, train (CPU), train (CUDA)"
  start_pip_mirror
  build_image pokedex-api api.dockerfile --build-arg "PYTHON_IMAGE=$PYTHON_BASE"
  build_image pokedex-train train.dockerfile --build-arg "PYTHON_IMAGE=$PYTHON_BASE"
  train_smoke
  discard_image pokedex-train
  section "build: train (CUDA)"
  build_image pokedex-train-cuda train-cuda.dockerfile --build-arg "CUDA_IMAGE=$CUDA_BASE"
  stop_pip_mirror
  cuda_smoke
  discard_image pokedex-train-cuda
  api_start
  api_predict
  api_checks
  api_sigterm
  report_sizes
  section "docker-test: all checks passed"
}

main "$@"; exit  # one line: bash reads nothing more from this file, which may change during a run
