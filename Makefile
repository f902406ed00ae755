# The two commands of the README: `make bench` (the main job) and `make test`.
# Both create .venv when missing, install torch (CPU build by default) and the other
# dependencies, build the C++ extension, then run.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
# Installed into .venv: torch (pinned; an unpinned torch pulls a multi-GB CUDA build),
# triton (GPU kernels; also runs them on CPU through its interpreter, which needs numpy),
# pytest + pytest-benchmark (tests and benchmark suite), ninja (extension build), ruff,
# onnx + onnxscript + onnxruntime (the ONNX export tests and example; not needed to run),
# setuptools >= 77 (builds the extension here; older ones refuse pyproject's license string).
DEPS := triton numpy pytest pytest-benchmark ninja ruff onnx onnxscript onnxruntime "setuptools>=77"
BENCH_ARGS ?= --json bench-results/cpu.json --plot bench-results/cpu.png

.PHONY: setup test bench lint clean gpu-check

$(VENV)/.fastrnn-deps: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q $(DEPS)
	touch $@

$(VENV)/.fastrnn-built: $(VENV)/.fastrnn-deps setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/python/*.cpp)
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $@

setup: $(VENV)/.fastrnn-built

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: setup lint
	$(PY) -m pytest -q tests benchmarks --benchmark-disable

# matplotlib only for the benchmark's plot (the package itself does not need it).
bench: setup
	$(PY) -m pip install -q matplotlib
	mkdir -p bench-results
	$(PY) -m fastrnn.bench $(BENCH_ARGS)

# On a CUDA machine with torch and triton installed (no .venv): GPU tests, benchmark
# grid in fp32/fp16/bf16 vs cuDNN, kernel counts, compute-sanitizer, tier A/B, as far as
# GPU_CHECK_LIMIT seconds (360) allow; JSON in gpu-results/.
gpu-check:
	OUT=gpu-results bash tools/gpu_check.sh

clean:
	rm -rf build *.egg-info fastrnn/*.so .pytest_cache .benchmarks
