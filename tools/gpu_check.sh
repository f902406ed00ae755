#!/usr/bin/env bash
# One call on a GPU machine: build, the benchmark grid in three dtypes, GPU tests, kernel
# counts and sanitizers on the cooperative tier; results (JSON, logs) under $OUT.
#     OUT=gpu-results bash tools/gpu_check.sh      (make gpu-check)
# Builds against the torch and triton already installed (no package registry needed).
# Each step has a time limit, so the whole stays within 10 minutes on one GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/machine.txt"
bench() {  # dtype, contenders, time limit (s)
  timeout "$3" python3 -m fastrnn.bench --device cuda --dtype "$1" --repeats 5 \
    --contenders "$2" --json "$OUT/bench-$1.json" > "$OUT/bench-$1.log" 2>&1
  echo "bench $1: exit $?"
  grep -E "^\| |geometric|ABORT|Error" "$OUT/bench-$1.log" | cut -c1-160
}
bench float32 fastrnn,nn.RNN,naive 110
timeout 90 python3 -m pytest -q --maxfail=5 tests/test_triton.py -m "not slow" -p no:cacheprovider \
  > "$OUT/tests.log" 2>&1; echo "tests: exit $?"; tail -12 "$OUT/tests.log"
timeout 35 python3 tools/gpu_kernel_count.py --json "$OUT/kernels.json" 2>&1 | tail -20
bench float16 fastrnn,nn.RNN 60
bench bfloat16 fastrnn,nn.RNN 50
for tool in racecheck; do
  timeout 30 compute-sanitizer --tool $tool --print-limit 5 python3 tools/sanitize_cooperative.py \
    > "$OUT/sanitizer-$tool.log" 2>&1; echo "$tool: exit $?"; tail -3 "$OUT/sanitizer-$tool.log"
done
