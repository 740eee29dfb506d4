# The README's commands. Every target does its own set-up through `setup`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# Where no GPU is present, torch comes from a CPU-only index so no CUDA packages are pulled.
# Here the local wheel of torch==$(TORCH_VERSION) is a CPU build; elsewhere set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_INDEX ?=
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: setup demo test test-all fuzz s3-faults bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(HAS_GPU),1)
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
else
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
endif
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu or gpu"

# The long fuzz loops over hostile and odd videos (README, Reliability); prints the reliability row.
fuzz: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -s -m slow tests/test_video_fuzz.py

# The long loop of object store faults through a fault-injecting proxy in front of a local
# S3 server (README, Reliability); prints the reliability rows. VIS_S3_FAULT_SEEDS=N for more.
s3-faults: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -s -m slow tests/test_s3_faults.py

bench: setup
	$(BIN)/python -m benchmarks.run

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

demo: setup
	$(BIN)/vis demo
