#!/usr/bin/env bash
# One call on a GPU machine: build, the benchmark grid in three dtypes, GPU tests, kernel
# counts, the tier A/B and sanitizers on the cooperative tier; results under $OUT (9 files:
# 3 bench JSON and logs, kernels.json, tiers.json, checks.log).
#     OUT=gpu-results bash tools/gpu_check.sh      (make gpu-check)
# Builds against the torch and triton already installed (no package registry needed).
# Each step has a time limit, 515 s in all plus the build (about a minute), so the whole
# stays within a device call's 10 minutes (the GPU tests alone took over 90 s on an H200,
# most of it compiling kernels).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
CHECKS="$OUT/checks.log"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-build-isolation --no-deps -e . > /tmp/fastrnn-build.log 2>&1 \
  || { tail -30 /tmp/fastrnn-build.log; exit 1; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} | tee "$CHECKS"
bench() {  # dtype, contenders, time limit (s)
  timeout "$3" python3 -m fastrnn.bench --device cuda --dtype "$1" --repeats 5 \
    --contenders "$2" --json "$OUT/bench-$1.json" > "$OUT/bench-$1.log" 2>&1
  echo "bench $1: exit $?"
  grep -E "^\| |geometric|ABORT|Error" "$OUT/bench-$1.log" | cut -c1-160
}
bench float32 fastrnn,nn.RNN,naive 100
gpu_tests() {  # time limit (s), pytest -k expression
  timeout "$1" python3 -m pytest -q --maxfail=5 tests/test_triton.py -m "not slow" -k "$2" \
    -p no:cacheprovider >> "$CHECKS" 2>&1; echo "tests ($2): exit $?"; tail -6 "$CHECKS"
}
# The single tests first (graph capture, opcheck, launch counts), then the case grids.
gpu_tests 40 "not matches_nn_rnn and not error_at_most_twice"
gpu_tests 110 "matches_nn_rnn or error_at_most_twice"
timeout 30 python3 tools/gpu_kernel_count.py --json "$OUT/kernels.json" 2>&1 | tail -20
timeout 75 python3 tools/gpu_tier_ab.py --json "$OUT/tiers.json" 2>&1 | tail -18
bench float16 fastrnn,nn.RNN 55
bench bfloat16 fastrnn,nn.RNN 45
for tool in racecheck memcheck; do
  timeout 30 compute-sanitizer --tool $tool --print-limit 5 python3 tools/sanitize_cooperative.py \
    > /tmp/fastrnn-sanitizer.log 2>&1; echo "$tool: exit $?" | tee -a "$CHECKS"
  tail -3 /tmp/fastrnn-sanitizer.log | tee -a "$CHECKS"
done
