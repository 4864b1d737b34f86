# The video streaming platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup up test test-fast lint typecheck check bench load chaos analysis clean

SCENARIO ?= viewers
USERS ?= 50
DURATION ?= 60s
SPAWN_RATE ?= 50
CHAOS_ARGS ?=
ANALYSIS_ARGS ?=

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

setup: ## Install what is missing: uv, the locked Python dependencies, ffmpeg/nginx/haproxy
	@bash deploy/local/setup.sh

up: setup ## Run the whole suite locally on its embedded defaults; prints where to watch and play
	@$(VENV)/bin/vsp up

test: setup ## Run every test (unit, integration, end-to-end) against the real services
	@$(PY) -m pytest -p no:cacheprovider

test-fast: setup ## Unit and integration tests only, no end-to-end (no service processes)
	@$(PY) -m pytest -p no:cacheprovider tests/unit tests/integration

lint: setup ## ruff check and format check
	@$(VENV)/bin/ruff check shared services tests load_tests
	@$(VENV)/bin/ruff format --check shared services tests load_tests

typecheck: setup ## mypy (strict for shared)
	@$(VENV)/bin/mypy shared

check: lint typecheck test ## Lint, type-check and test

bench: setup ## Every benchmark side by side with its baseline (under 20 min); rewrites docs/BENCHMARKS.md
	@mkdir -p results
	@$(PY) -m load_tests.run_all

load: setup ## Locust headless against the running suite: SCENARIO=viewers|uploaders|redirects|mixed USERS=50 DURATION=60s
	@mkdir -p results
	@PYTHONPATH=$(CURDIR) $(VENV)/bin/locust -f load_tests/scenarios/$(SCENARIO).py --headless \
		-u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) --stop-timeout 10 --only-summary \
		--csv results/load_$(SCENARIO) --html results/load_$(SCENARIO).html

chaos: setup ## Restart RabbitMQ, PostgreSQL, Redis and kill each process under load (under 15 min); CHAOS_ARGS="--only kill-edge"
	@mkdir -p results
	@$(PY) -m load_tests.chaos $(CHAOS_ARGS)

analysis: setup ## The trade-offs measured (uploads, workers, edges, cache, ABR; under 30 min); rewrites docs/ANALYSIS.md; ANALYSIS_ARGS="--quick"
	@mkdir -p results
	@$(PY) -m load_tests.analysis $(ANALYSIS_ARGS)

clean: ## Remove run data (var/) and benchmark results
	rm -rf var results
