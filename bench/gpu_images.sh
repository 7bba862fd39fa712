#!/usr/bin/env bash
# Image generators on one CUDA GPU (made for an H200), in under ~5 minutes:
#   training images/s at 64x64 RGB, bf16-mixed, eager and compile=True, for ConditionalDiffusion and ConditionalGAN;
#   DDIM sampling images/s at 64x64 under bf16 autocast, ours and denoising-diffusion-pytorch's (if installed).
# It runs `python bench/image_models.py --gpu` (see that file's docstring for what is timed and how).
#
#   bash bench/gpu_images.sh              # from anywhere; extra arguments go to image_models.py (e.g. --quick)
#   WHEELS=wheels bash bench/gpu_images.sh   # first install every wheel in ./wheels (no index is reached)
#
# Results: $OUT/image_models_gpu.json and $OUT/gpu_images.log when OUT is set, else
# bench/results/image_models_gpu.json. Exits non-zero, with the reason, on any failure: no GPU, a missing package,
# a configuration that fails to train or sample (the others still run and are written first), or a run past
# LIMIT_S seconds (default 540).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
LIMIT_S=${LIMIT_S:-540}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # models/, datamodules/, scarce/ without an install
export PYTHONUNBUFFERED=1

fail() { echo "gpu_images.sh: error: $*" >&2; exit 1; }
source "$ROOT/bench/gpu_lib.sh"  # install_wheels, bench_outputs, run_bench

command -v "$PYTHON" >/dev/null || fail "no '$PYTHON' on PATH (set PYTHON=...)"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this script needs an NVIDIA GPU machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || fail "nvidia-smi sees no GPU"

install_wheels

# Fail before any timing when CUDA or a package the models need is missing (the reference sampler is optional).
"$PYTHON" - <<'EOF' || fail "pre-flight check failed (the line above says why; carry missing packages as wheels, WHEELS=<folder>)"
import sys
try:
    import torch, lightning  # noqa: F401
    import models.diffusion, models.gan  # noqa: F401  (everything the benchmark imports from this repo)
except ModuleNotFoundError as e:
    sys.exit(f"missing Python package: {e.name!r} ({e})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device")
print(f"torch {torch.__version__}, lightning {lightning.__version__}, {torch.cuda.get_device_name()}")
try:
    import denoising_diffusion_pytorch  # noqa: F401
except ImportError as e:
    print(f"note: denoising-diffusion-pytorch not importable ({e}); only our sampler will be timed")
EOF

bench_outputs image_models_gpu.json gpu_images.log

run_bench "bench/image_models.py --gpu" bench/image_models.py --gpu --output "$json" "$@"
echo "gpu_images.sh: wrote $json"
