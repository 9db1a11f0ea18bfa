# marathi-nwp: `make run` (the main job on the embedded corpus) and `make test` work on a fresh clone.
PY      := .venv/bin/python
CONFIG  ?= configs/default.yaml
STAMP   := .venv/.installed
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help setup run test test-browser prepare train evaluate experiment ui serve bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (quick when nothing changed)

run: setup ## the main job: prepare, train RNN + LSTM, evaluate, register, print the table
	$(PY) -m pipeline run --config $(CONFIG) $(ARGS)

test: setup ## run the test suite
	$(PY) -m pytest -q -m "not browser" $(ARGS)

prepare: setup ## clean the corpus and build the tokenizer (CONFIG=...)
	$(PY) -m pipeline prepare --config $(CONFIG) $(ARGS)

train: setup ## train or resume the model of CONFIG
	$(PY) -m pipeline train --config $(CONFIG) $(ARGS)

clean: ## remove caches, runs and the local MLflow store (keeps .venv)
	rm -rf data/cache runs lightning_logs mlflow.db mlartifacts .pytest_cache
