# The two set-up commands of README.md. Both bootstrap a local virtual environment (.venv) if
# absent, install torch's CPU wheel first (requirements/torch.txt), then the project with all
# extras except [gpu]. A second run installs nothing unless pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.refimpl-installed
PYTEST_ARGS ?= -n 2

.PHONY: verify test install bench gpu-check clean mutants

$(STAMP): pyproject.toml requirements/torch.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/torch.txt
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

verify: $(STAMP)
	$(BIN)/refimpl verify

# Two xdist workers on two cores: one BLAS/torch thread each, or they oversubscribe the cores.
test: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/refimpl bench --rule all --markdown

# On a machine with an NVIDIA GPU: CuPy for the driver's CUDA, the gpu-marked tests, verify and bench
# on CuPy, a GPU-scale training run; one table, written to runs/gpu-check.json. Without a GPU make
# stops before installing anything with one line saying so (status 2). Not yet run on a GPU.
ifneq ($(filter gpu-check,$(MAKECMDGOALS)),)
GPU_DETECT := $(shell $(PYTHON) benchmarks/gpu_check.py --detect 2>&1; echo "rc=$$?")
ifneq ($(lastword $(GPU_DETECT)),rc=0)
$(error $(filter-out rc=%,$(GPU_DETECT)))
endif
endif
gpu-check: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/gpu_check.py --out runs/gpu-check.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Mutation testing (not in CI): a seeded sample of mutants of refimpl/rules, ode, scg, each judged by
# its mirror tests and `refimpl verify --only FAMILY`; prints the kill rate and the survivors.
# MUTANTS=0 runs every mutation point (hours on 2 cores).
MUTANTS ?= 60
mutants: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python tools/mutants.py --sample $(MUTANTS) --seed 0
