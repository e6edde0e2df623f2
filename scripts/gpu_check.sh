#!/usr/bin/env bash
# GPU lane (issue 11, item 7), meant as ONE call of the `device` tool when a GPU is lent (< 8 min):
#   bash scripts/gpu_check.sh            # writes $OUT/gpu_check.txt when $OUT is set
# Prints the GPU and versions, then runs the CUDA tests (pytest -m gpu: SDPA vs the CPU kernel,
# bf16 vs fp32 energies, the rollout memory budget honoured on the device).
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
log="${OUT:-/tmp}/gpu_check.txt"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  timeout 420 python -m pytest -q -m gpu tests/test_gpu.py -rs
} 2>&1 | tee "$log"
