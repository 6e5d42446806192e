#!/usr/bin/env bash
# Run benchmarks/gpu.py on a machine with one CUDA GPU and no network: check the GPU and the
# torch build first, run the benchmark under a timeout, keep everything in a log.
#
#   benchmarks/gpu.sh                 # the full run (both shapes, 50 timed steps each; ~2-4 min)
#   benchmarks/gpu.sh --cases 160m    # extra arguments go to gpu.py
#   benchmarks/gpu.sh --quick         # the CPU smoke test (no GPU needed)
#
# Environment: PYTHON (default .venv/bin/python, else python3), BENCH_TIMEOUT (seconds,
# default 540: under the 10 minutes a run should take at most), BENCH_LOG (default
# benchmarks/runs/gpu-<UTC time>.log; that folder is ignored by git).
# The last line of the output (and of the log) is the result line, the one before it the host.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
TIMEOUT=${BENCH_TIMEOUT:-540}
LOG=${BENCH_LOG:-benchmarks/runs/gpu-$(date -u +%Y%m%dT%H%M%SZ).log}
mkdir -p "$(dirname "$LOG")"

quick=${BENCH_QUICK:-0}
for arg in "$@"; do [[ $arg == --quick ]] && quick=1; done

# No download is needed (random models, synthetic data): fail fast instead of waiting on the
# network if anything tries. CUBLAS_WORKSPACE_CONFIG is left unset on purpose: it matters only
# with torch.use_deterministic_algorithms, which the library does not call, and would change
# cuBLAS's workspace (memory and speed) from what a pipeline job gets.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

set +e
{
    echo "# gpu.sh $(date -u +%FT%TZ) on $(hostname), args: $*"
    if [[ $quick != 1 ]]; then
        if ! command -v nvidia-smi >/dev/null; then
            echo "gpu.sh: nvidia-smi not found: no NVIDIA driver here (--quick runs on the CPU)" >&2
            exit 2
        fi
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu \
            --format=csv
        nvidia-smi --query-compute-apps=pid,used_memory --format=csv
        "$PYTHON" -c 'import sys, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
sys.exit(0 if torch.cuda.is_available() else 3)' || {
            echo "gpu.sh: this torch cannot use the GPU (a CPU build?); install a CUDA build" >&2
            exit 3
        }
    fi
} 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
[[ $status == 0 ]] || exit "$status"

timeout --signal=INT --kill-after=30 "$TIMEOUT" "$PYTHON" benchmarks/gpu.py "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [[ $status == 124 ]]; then
    echo "gpu.sh: gpu.py ran past ${TIMEOUT} s and was stopped" | tee -a "$LOG" >&2
fi
if [[ $quick != 1 ]]; then  # the CUDA tests (skipped on a machine without CUDA)
    timeout --kill-after=30 300 "$PYTHON" -m pytest -q -m gpu tests/test_cuda.py 2>&1 | tee -a "$LOG"
    tests=${PIPESTATUS[0]}
    [[ $status == 0 ]] && status=$tests
fi
echo "gpu.sh: exit status $status, log $LOG" >&2
exit "$status"
