#!/usr/bin/env bash
# The GPU figures in one prepared run (docs/performance.md, "GPU"): scripts/bench_train.py --device cuda (images/s
# of the augmented and cached data paths against the model alone) and `python -m pokedex.train experiment=full`
# on the sprites with the robustness augmentations (time per epoch, clean and suite top-1). A GPU machine may be
# lent for minutes only, so everything is prepared here and written as a few flat files.
#
#   scripts/gpu_check.sh [extra Hydra overrides for the training run]
#
# Needs data/pokemon.zip (`make data`) and a python3 with torch (CUDA), lightning, timm and torchmetrics. What the
# training needs beyond those and a GPU image may lack (hydra-core, omegaconf, antlr4, cc3d) travels as wheels in
# .whl/ (`make gpu-wheels`): they are installed into a temporary directory, nothing else is touched.
# Environment: OUT (the flat results; default outputs/gpu_check), RUN_DIR (the training run; default
# $OUT/../gpu_check_run), DEVICE (cuda; cpu rehearses the script), PARTS ("bench train"), BENCH_ARGS (replace the
# bench's timing arguments), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-outputs/gpu_check}
run_dir=${RUN_DIR:-$out/../gpu_check_run}
device=${DEVICE:-cuda}
parts=${PARTS:-bench train}
python=${PYTHON:-python3}
mkdir -p "$out"

if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ ! -f data/pokemon.zip ]]; then
  echo "gpu_check: data/pokemon.zip is missing: build it with 'make data' (npm is needed once)" >&2
  exit 2
fi
"$python" - "$device" <<'EOF' | tee "$out/environment.txt"
import importlib.util
import platform
import sys

needed = ("torch", "lightning", "timm", "torchmetrics", "hydra", "omegaconf", "cc3d", "onnxruntime")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:  # before any GPU time is spent; onnxruntime runs the preprocessing's segmentation of photos (since v8)
    sys.exit(f"gpu_check: missing Python packages {missing}: carry wheels of them in .whl/ (make gpu-wheels)")

import torch

device = sys.argv[1]
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (DEVICE=cpu rehearses this script without one)")
name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU"
print(f"python {platform.python_version()}, torch {torch.__version__}, {name}")
EOF

if [[ " $parts " == *" bench "* ]]; then
  echo "== bench_train --device $device: images/s of each data path against the model alone"
  # shellcheck disable=SC2086  # BENCH_ARGS holds several arguments
  "$python" scripts/bench_train.py --device "$device" --config experiment=full --modes compute,augment,cache \
    --json "$out/bench_train.json" ${BENCH_ARGS:---steps 200 --warmup 30 --max-seconds 30} 2>&1 |
    tee "$out/bench_train.log"
fi
if [[ " $parts " == *" train "* ]]; then
  echo "== experiment=full on $device: 15 epochs, then the test split and the robustness suite"
  "$python" -m pokedex.train experiment=full logger=csv hydra.run.dir="$run_dir" "$@" 2>&1 | tee "$out/train.log"
  cp "$run_dir/metrics.json" "$out/metrics.json"
  cp "$run_dir"/csv/metrics.csv "$out/epochs.csv"
fi
"$python" scripts/gpu_summary.py "$out" | tee "$out/summary.md"
