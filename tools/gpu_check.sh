#!/usr/bin/env bash
# On a GPU machine: build, then the named steps (all when none is named), results under
# $OUT (bench-<dtype>.json, bench.log, kernels.json, tiers.json, gemms.json, calls.json,
# steps.json, checks.log): a device call brings back 8 files at most, so not every step in one call.
#     OUT=gpu-results bash tools/gpu_check.sh                 (make gpu-check)
#     OUT=gpu-results bash tools/gpu_check.sh tests tiers bench32
# Steps: errorpaths tests bench32 bench16 bench16bf kernels sanitize tiers (the default),
# and single-tests (tests without the case grids), selected-tests (those of TESTS_K, a
# pytest -k expression), gemms (the fp32 GEMMs alone: cuBLAS
# IEEE, cuBLAS TF32, fastrnn's TF32 kernel), calls cprofile (host time per call), steps
# (each losing row's wall time per call against its kernels' device time), ncu
# (Nsight Compute sections of the recurrence kernels; NCU_CASES="medium/float16 ...");
# TIER_CASES=float16/large,..., TIER_VARIANT=fastrnn-ieee,... and TIER_LIMIT=seconds
# narrow the tier A/B; SANITIZE_LIMIT=seconds per compute-sanitizer tool (30).
# Builds against the torch and triton already installed (no package registry needed).
# The whole, build included, stops within GPU_CHECK_LIMIT seconds (360: six minutes;
# up to ~570 fits a device call's 10): each step has its own time limit and gets at most
# what is left (a step with under 10 s left is skipped); a bench cut short prints and
# keeps in its JSON the rows it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
DEADLINE=$((SECONDS + ${GPU_CHECK_LIMIT:-360}))
within() {  # seconds, command...: the command under `timeout`, at most until DEADLINE
  local seconds=$(( $1 < DEADLINE - SECONDS ? $1 : DEADLINE - SECONDS ))
  shift
  if (( seconds < 10 )); then echo "skipped: GPU_CHECK_LIMIT spent" >&2; return 124; fi
  # TERM lets the bench report its rows; KILL 5 s later ends a process stuck on the GPU,
  # still within the step's seconds.
  timeout -k 5 "$((seconds - 5))" "$@"
}
mkdir -p "$OUT"
CHECKS="$OUT/checks.log"
export PYTHONUNBUFFERED=1
python3 -m pip install -v --no-build-isolation --no-deps -e . > /tmp/fastrnn-build.log 2>&1 \
  || { tail -30 /tmp/fastrnn-build.log; exit 1; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  # Without ninja torch's BuildExtension compiles one file at a time (~65 s on 2026-12-04).
  python3 -c "from torch.utils.cpp_extension import is_ninja_available as ninja
print('build: $SECONDS s, $(nproc) cores, ninja', ninja())"
} | tee -a "$CHECKS"

bench() {  # dtype, contenders, time limit (s)
  echo "== bench $1 ($2)" >> "$OUT/bench.log"
  within "$3" python3 -m fastrnn.bench --device cuda --dtype "$1" --repeats 5 \
    --contenders "$2" --json "$OUT/bench-$1.json" >> "$OUT/bench.log" 2>&1
  echo "bench $1: exit $?"
  sed -n '/^== bench '"$1"'/,$p' "$OUT/bench.log" | grep -E "^\| |geometric|ABORT|STOPPED|Error|skipped" \
    | cut -c1-160
}
gpu_tests() {  # time limit (s), pytest -k expression; in parallel where pytest-xdist is
  local workers=()
  python3 -c "import xdist" 2>/dev/null && workers=(-n 8)
  # -v (not with -q, which cancels it): each test's outcome as it ends, so a run cut by
  # its time limit still names its failures (the summary never comes then).
  within "$1" python3 -m pytest -v --tb=short "${workers[@]}" --maxfail=5 --durations=8 \
    tests/test_triton.py tests/test_launch_replay.py -m "not slow" -k "$2" \
    -p no:cacheprovider >> "$CHECKS" 2>&1
  echo "tests ($2): exit $?"; grep -E "FAILED|ERROR" "$CHECKS" | cut -c1-200 | tail -12
  tail -3 "$CHECKS"
}
ncu_calls() {  # Nsight Compute on the recurrence kernels of one call of each NAME/dtype
  for case in ${NCU_CASES:-medium/float16 medium/float32 fastrnns/float16}; do
    echo "== ncu $case" >> "$CHECKS"
    within 60 ncu --kernel-name regex:rnn_ --launch-skip 4 --launch-count 2 \
      --section SpeedOfLight --section WarpStateStats --section LaunchStats \
      --section Occupancy python3 -c "
import sys, torch, fastrnn
from fastrnn.bench.shapes import GPU_SHAPES, SHAPES, make_input
name, dtype = sys.argv[1].split('/')
shape = next(s for s in SHAPES + GPU_SHAPES if s.name == name)
dtype = getattr(torch, dtype)
rnn = fastrnn.RNN(shape.input_size, shape.hidden, shape.layers,
                  bidirectional=shape.bidirectional, device='cuda', dtype=dtype)
x = make_input(shape, 'cuda', dtype).requires_grad_()
for _ in range(3):  # launches 5 and 6 (after --launch-skip 4): the third step's
    out, h_n = rnn(x)
    (out.sum() + h_n.sum()).backward()
torch.cuda.synchronize()" "$case" 2>&1 | grep -vE "^==PROF==|^\s*$" | cut -c1-140 >> "$CHECKS"
    echo "ncu $case: exit ${PIPESTATUS[0]}"
  done
  grep -iE "^== ncu|rnn_.*kernel|duration|throughput|registers per|achieved occupancy|warp cycles per issued|stall" "$CHECKS" | tail -60
}
error_paths() {  # each refused call in its own process; a native backtrace of a crash
  { c++ --version | head -1
    python3 -c "import sysconfig as s; print('LDSHARED', s.get_config_var('LDSHARED'))"
    grep -E "fvisibility|-shared" /tmp/fastrnn-build.log | cut -c1-700 | head -4
    readelf -d fastrnn/libfastrnn_ops.so | grep -E "NEEDED|SONAME|RUNPATH"
    # Per library: the newest libstdc++ symbol version it uses, and how many std::locale
    # symbols it defines itself (0 here; 136 when built with -static-libstdc++).
    for lib in fastrnn/libfastrnn_ops.so fastrnn/_C*.so; do
      echo "$lib: $(objdump -T "$lib" | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1)," \
        "$(nm -C --defined-only "$lib" | grep -c 'std::locale::') std::locale symbols"
    done
  } >> "$CHECKS" 2>&1
  local crashed=""
  for path in $(python3 tools/error_paths.py --list); do
    within 60 python3 tools/error_paths.py "$path" >> "$CHECKS" 2>&1
    local rc=$?
    echo "error path $path: exit $rc" | tee -a "$CHECKS"
    if (( rc != 0 )) && [ -z "$crashed" ]; then crashed=$path; fi
  done
  if [ -n "$crashed" ]; then
    within 120 cuda-gdb -q -batch -ex run -ex bt -ex "x/3i \$pc" \
      --args python3 tools/error_paths.py "$crashed" 2>&1 | grep -vE "^\[(New )?Thread" \
      | tail -60 | tee -a "$CHECKS"
  fi
}
sanitize() {
  for tool in racecheck memcheck; do
    within "${SANITIZE_LIMIT:-30}" compute-sanitizer --tool $tool --print-limit 5 \
      python3 tools/sanitize_kernels.py > /tmp/fastrnn-sanitizer.log 2>&1
    echo "$tool: exit $?" | tee -a "$CHECKS"
    tail -3 /tmp/fastrnn-sanitizer.log | tee -a "$CHECKS"
  done
}

STEPS=("$@")
# By default the correctness checks, then the tables, then the rest: a call cut short
# loses the least.
[ ${#STEPS[@]} -eq 0 ] && STEPS=(errorpaths tests bench32 bench16 bench16bf kernels sanitize tiers)
for step in "${STEPS[@]}"; do
  echo "== $step ($(date +%T), ${SECONDS} s in)"
  case $step in
    # The single tests first (graph capture, opcheck, launch counts), then the case grids.
    tests) gpu_tests 170 "not matches_nn_rnn and not error_at_most_twice"
           gpu_tests 110 "matches_nn_rnn or error_at_most_twice" ;;
    single-tests) gpu_tests 170 "not matches_nn_rnn and not error_at_most_twice" ;;
    selected-tests) gpu_tests 120 "${TESTS_K:?TESTS_K: a pytest -k expression}" ;;
    kernels) within 30 python3 tools/gpu_kernel_count.py --json "$OUT/kernels.json" 2>&1 | tail -20 ;;
    calls) within 90 python3 tools/gpu_call_profile.py --json "$OUT/calls.json" 2>&1 | tail -16 ;;
    steps) within 90 python3 tools/gpu_step_profile.py --json "$OUT/steps.json" 2>&1 \
             | grep -v "^USDT" | cut -c1-220 | tail -70 ;;
    cprofile) within 60 python3 tools/gpu_call_profile.py --cprofile 2>&1 | grep -v "^$" | cut -c1-150 ;;
    tiers) within "${TIER_LIMIT:-45}" python3 tools/gpu_tier_ab.py --json "$OUT/tiers.json" \
             ${TIER_CASES:+--cases "$TIER_CASES"} ${TIER_VARIANT:+--variant "$TIER_VARIANT"} \
             2>&1 | tail -60 ;;
    gemms) within "${GEMM_LIMIT:-60}" python3 tools/gpu_gemm_ab.py --json "$OUT/gemms.json" \
             2>&1 | tail -40 ;;
    bench32) bench float32 fastrnn,nn.RNN,naive 115 ;;
    bench16) bench float16 fastrnn,nn.RNN 65 ;;
    bench16bf) bench bfloat16 fastrnn,nn.RNN 70 ;;
    sanitize) sanitize ;;
    errorpaths) error_paths ;;
    ncu) ncu_calls ;;
    *) echo "unknown step $step" ;;
  esac
done
