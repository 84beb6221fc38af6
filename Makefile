# pipecast — one entry point. Each target is a one-liner; `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install serve train test test-fast lint bench

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q -e '.[dev]' && touch $(STAMP)

install: $(STAMP) ## Create .venv and install pipecast with its dev tools

serve: $(STAMP) ## Generate the demo export and train if needed, then serve the API on :8000
	$(BIN)/pipecast serve --prepare --host 0.0.0.0 --port 8000

train: $(STAMP) ## Retrain both models on PIPECAST_DATA_DIR; promote only if the gates pass
	$(BIN)/pipecast train

test: $(STAMP) ## Run the whole test suite
	$(BIN)/pytest -q

test-fast: $(STAMP) ## Run the fast tests only (no slow, real-data or PostgreSQL tests)
	$(BIN)/pytest -q -m "not slow and not real_data and not postgres"

lint: $(STAMP) ## ruff (lint and format check) and mypy on the packages
	$(BIN)/ruff check pipecast features models training serving tests && $(BIN)/ruff format --check pipecast features models training serving tests benchmarks && $(BIN)/mypy

bench: $(STAMP) ## Print speed and memory figures (features, training)
	$(BIN)/python -m benchmarks.run
