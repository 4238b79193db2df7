# Model Trainer: one Makefile. Every target works on a fresh clone (it runs `setup` when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help setup demo dev test lint fmt bench clean-data

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) browser ## Create .venv and install the project (editable) with dev extras

# The dashboard's browser tests (tests/ui) drive Debian's chromium through Playwright, which needs no driver.
CHROMIUM_INSTALL := apt-get install -y chromium
.PHONY: browser
browser: ## Install Debian's chromium for the browser tests where it is missing (apt, as root)
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(CHROMIUM_INSTALL); \
		else \
			echo "make setup: the browser tests need Debian's chromium; run as root: $(CHROMIUM_INSTALL)"; \
		fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup ## Train a tokenizer and a GPT-2 on Tiny Shakespeare through the API (~5 min; DEMO_STEPS=200: ~1 min)
	$(BIN)/python scripts/demo.py $(if $(DEMO_STEPS),--max-steps $(DEMO_STEPS))

dev: setup ## Run Redis (embedded unless REDIS__URL is set), the API and the workers; Ctrl-C stops all
	$(BIN)/python scripts/stack.py

test: setup ## Run the test suite (starts its own private redis-server)
	$(BIN)/python -m pytest

bench: setup ## Run the benchmarks (several minutes) and write docs/benchmarks.md
	@# The gateway benchmark's load generator is Debian's wrk: installed when running as root, else named.
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q wrk >/dev/null; } \
		|| echo "bench: the gateway benchmark needs wrk: sudo apt-get install wrk"
	$(BIN)/python scripts/bench.py $(BENCH)

lint: setup ## ruff check, ruff format --check, mypy --strict and the guard script
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/guard.py

fmt: setup ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-data: ## Delete local artifacts, runs and the embedded Redis data under .data/
	rm -rf .data

# The docker compose stack (deploy/compose.yml; docs/deploy.md). Paths in it are relative to this folder.
COMPOSE := docker compose --project-directory . -f deploy/compose.yml
.PHONY: start stop restart clean logs

start: ## Build the image and start Redis, the API and the workers with docker compose
	$(COMPOSE) up -d --build

stop: ## Stop and remove the compose stack's containers (its volumes, and so the data, are kept)
	$(COMPOSE) down

restart: ## Stop the compose stack, then rebuild and start it
	$(MAKE) stop
	$(MAKE) start

clean: ## Remove the compose stack's containers, built images and volumes (deletes its data)
	$(COMPOSE) down --volumes --rmi local --remove-orphans

logs: ## Follow the compose stack's logs (the last 100 lines of each service first)
	$(COMPOSE) logs --follow --tail=100
