# LLM serving benchmark kit. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TINY_MODEL ?= .cache/models/tiny-llama
PYTEST_ARGS ?=
# Tests and local mode never reach for the Hugging Face Hub.
LOCAL_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: help install tiny-model test lint format bench bench-serving system-deps clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml services/fastapi_llama/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: here it is a local CPU build; a loose pin would pull GBs of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e services/fastapi_llama -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv with the service, the load tester and dev tools

$(TINY_MODEL)/tiny-model.json: $(VENV)/.installed services/fastapi_llama/fastapi_llama/tiny_model.py
	$(LOCAL_ENV) $(VENV)/bin/fastapi-llama-tiny-model --out $(TINY_MODEL)

tiny-model: $(TINY_MODEL)/tiny-model.json ## Build the offline tiny Llama model (random weights, local tokenizer)

system-deps: ## Install the system packages the tests use (Debian; needs root)
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	else echo "system-deps: not root or not Debian; tests that need prometheus will skip"; fi

test: install tiny-model ## Run the test suite (starts the servers it needs on 127.0.0.1)
	$(LOCAL_ENV) TINY_MODEL=$(TINY_MODEL) $(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install tiny-model ## Local mode end to end: both services, the sweep, the report (no GPU, no Docker)
	@echo "make bench: the local end-to-end run is not built yet (issue: local mode end to end)." >&2; exit 2

clean: ## Remove the venv, the tiny model and results
	rm -rf $(VENV) .cache results

bench-serving: install tiny-model ## Serving benchmark: naive vs static vs continuous vs the offline padded-batch bound
	$(LOCAL_ENV) $(PY) services/fastapi_llama/benchmarks/serving.py --model-id $(TINY_MODEL) $(BENCH_SERVING_ARGS)
