# Model Trainer: one Makefile. Every target works on a fresh clone (it runs `setup` when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help setup demo dev test lint fmt clean-data

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the project (editable) with dev extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup ## Train a tokenizer and a GPT-2 on Tiny Shakespeare through the API (about 5 minutes)
	$(BIN)/python scripts/demo.py

dev: setup ## Run Redis (embedded unless REDIS__URL is set), the API and both workers; Ctrl-C stops all
	$(BIN)/python scripts/stack.py

test: setup ## Run the test suite (starts its own private redis-server)
	$(BIN)/python -m pytest

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
