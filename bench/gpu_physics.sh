#!/usr/bin/env bash
# Physics simulators on one CUDA GPU (made for an H200), in about 2-4 minutes:
#   DRRs/s at 256 x 256 from the real head CT (InVesalius Cranium, 256 x 256 x 108), Joseph projector, batches of 16
#   and 64 poses, volume in fp32 / fp16 / bf16, eager and torch.compile, each with its relative L1 difference to
#   fp32 (goal: >= 2,000 DRRs/s); MRI slices/s at 256 x 256 with 8 coils (noise, 2x undersampling, RSS) against
#   the bare FFTs. It runs `python bench/physics.py --gpu` (see that file's docstring for what is timed and how).
#
#   bash bench/gpu_physics.sh                        # on the GPU machine
#   bash bench/gpu_physics.sh --device cpu --quick   # smoke check anywhere (32 x 32, batch 2, no compile)
#   CT=.gpu_data/Cranium.inv3 bash bench/gpu_physics.sh   # the CT from another path (carry it to the GPU machine:
#                                                         # Debian's /usr/share/doc is not there)
#   WHEELS=wheels bash bench/gpu_physics.sh          # first install every wheel in ./wheels (no index is reached)
#
# Results: $OUT/physics_gpu.json and $OUT/gpu_physics.log when OUT is set, else bench/results/physics_gpu.json.
# Exits non-zero, with the reason, on any failure: no GPU (unless --device cpu), a missing package or CT file, a
# failing run, or a run past LIMIT_S seconds (default 480). A variant that fails (say bf16 under compile) is
# recorded as "failed: ..." in the JSON and the others still run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
LIMIT_S=${LIMIT_S:-480}
CT=${CT:-/usr/share/doc/invesalius-examples/examples/Cranium.inv3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # physics/, scarce/ without an install
export PYTHONUNBUFFERED=1

fail() { echo "gpu_physics.sh: error: $*" >&2; exit 1; }
source "$ROOT/bench/gpu_lib.sh"  # install_wheels, bench_outputs, run_bench

device=cuda
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--device" ]]; then j=$((i + 1)); device=${!j:-}; fi
done
[[ "$device" == cpu || "$device" == cuda ]] || fail "--device $device is not allowed; expected cpu or cuda"

command -v "$PYTHON" >/dev/null || fail "no '$PYTHON' on PATH (set PYTHON=...)"
[[ -f "$CT" ]] || fail "CT=$CT: no such file (Debian: apt-get install invesalius-examples; or copy Cranium.inv3 and set CT=)"
if [[ "$device" == cuda ]]; then
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: use --device cpu, or run on an NVIDIA GPU machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || fail "nvidia-smi sees no GPU"
fi

install_wheels

# Fail before any timing when CUDA or a package the simulators need is missing.
DEVICE=$device "$PYTHON" - <<'EOF' || fail "pre-flight check failed (the line above says why; carry missing packages as wheels, WHEELS=<folder>)"
import os, sys
try:
    import numpy, torch  # noqa: F401
    import physics.mri, physics.phantoms, physics.xray, scarce.io  # noqa: F401  (what bench/physics.py imports)
except ModuleNotFoundError as e:
    sys.exit(f"missing Python package: {e.name!r} ({e})")
if os.environ["DEVICE"] == "cuda" and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if os.environ['DEVICE'] == 'cuda' else 'cpu'}")
EOF

bench_outputs physics_gpu.json gpu_physics.log

run_bench "bench/physics.py --gpu" bench/physics.py --gpu --ct "$CT" --out "$json" "$@"
echo "gpu_physics.sh: wrote $json"
