#!/usr/bin/env bash
# One call on a GPU machine: build, GPU tests, sanitizers on the cooperative tier, kernel
# counts, and the benchmark grid in three dtypes; results (JSON, logs) under $OUT.
#     OUT=gpu-results bash tools/gpu_check.sh      (make gpu-check)
# Builds against the torch and triton already installed (no package registry needed).
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
timeout 240 python3 -m pytest -q -x tests/test_triton.py -m "not slow" -p no:cacheprovider \
  2>&1 | tail -15 | tee "$OUT/tests.log"
for tool in racecheck memcheck; do
  timeout 90 compute-sanitizer --tool $tool --print-limit 5 python3 tools/sanitize_cooperative.py \
    2>&1 | tail -4 | tee -a "$OUT/sanitizer.log"
done
timeout 60 python3 tools/gpu_kernel_count.py --json "$OUT/kernels.json" 2>&1 | tail -20
for dtype in float32 float16 bfloat16; do
  contenders=fastrnn,nn.RNN
  [ "$dtype" = float32 ] && contenders=fastrnn,nn.RNN,naive
  timeout 200 python3 -m fastrnn.bench --device cuda --dtype $dtype --repeats 5 \
    --contenders $contenders --json "$OUT/bench-$dtype.json" > "$OUT/bench-$dtype.log" 2>&1
  grep -E "^\| |geometric|ABORT|Error" "$OUT/bench-$dtype.log" | cut -c1-150
done
