# pokedex — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install.stamp
ARGS ?=

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## create .venv and install pokedex with its dev extra (re-runs are instant)

.PHONY: data
data: $(STAMP) ## fetch, verify and convert the embedded sprites into data/pokemon.zip
	$(PY) -m pokedex.prepare $(ARGS)

.PHONY: train
train: data ## prepare the data and train the default CPU experiment (ARGS=... for overrides)
	$(PY) -m pokedex.train experiment=cpu $(ARGS)

.PHONY: test
test: $(STAMP) ## run the default (fast) test suite with coverage
	$(PY) -m pytest --cov --cov-report=term $(ARGS)

.PHONY: test-slow
test-slow: $(STAMP) ## run the slow end-to-end tests
	$(PY) -m pytest -m slow $(ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: format
format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: clean
clean: ## remove caches and run outputs (keeps data/ and .venv)
	rm -rf .pytest_cache .ruff_cache .coverage* htmlcov outputs multirun lightning_logs
