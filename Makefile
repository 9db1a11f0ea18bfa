# marathi-nwp: `make run` (the main job on the embedded corpus) and `make test` work on a fresh clone.
PY      := .venv/bin/python
CONFIG  ?= configs/default.yaml
STAMP   := .venv/.installed
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help setup run served test test-slow test-all test-browser prepare train evaluate ablate probe mix mix-report keystrokes-report experiment longrange gradients ui serve bench bench-report clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (quick when nothing changed)

run: setup ## the main job: prepare, train RNN + LSTM, evaluate, register, print the table
	$(PY) -m pipeline run --config $(CONFIG) $(ARGS)

# The quick loop is `make test`; the tests marked slow (training runs, kills, subprocesses, MLflow jobs) run under
# `make test-slow`, and CI runs both, then the browser test.
served: setup ## the served LSTM on the full corpus (configs/served.yaml): train <= 60 min (resumable), fit its mixture, evaluate every test word, register marathi-nwp-served -> reports/served.md
	$(PY) -m pipeline run --config configs/served.yaml --cells lstm $(ARGS)
	$(PY) -m pipeline served-report --config configs/served.yaml $(ARGS)

test: setup ## the import contracts (lint-imports), then the fast tests (~1.5 min on 2 cores; not slow, not browser)
	.venv/bin/lint-imports --no-cache
	$(PY) -m pytest -q -m "not slow and not browser" $(ARGS)

test-slow: setup ## the tests marked slow only (training runs, kills, MLflow jobs; CI runs them after make test)
	$(PY) -m pytest -q -m "slow and not browser" $(ARGS)

test-all: setup ## the import contracts, then every test but the browser one (make test + make test-slow)
	.venv/bin/lint-imports --no-cache
	$(PY) -m pytest -q -m "not browser" $(ARGS)

test-browser: setup ## the live-suggestion page in the system Chromium (apt-get install chromium fonts-lohit-deva)
	$(PY) -m pytest -q -m browser tests/browser $(ARGS)

prepare: setup ## clean the corpus and build the tokenizer (CONFIG=...)
	$(PY) -m pipeline prepare --config $(CONFIG) $(ARGS)

train: setup ## train or resume the model of CONFIG
	$(PY) -m pipeline train --config $(CONFIG) $(ARGS)

evaluate: setup ## evaluate MODEL (run id, models:/..., checkpoint) on the whole test split (typist too), with the n-gram row
	$(PY) -m pipeline evaluate --config $(CONFIG) --model $(or $(MODEL),models:/marathi-nwp-lstm@champion) --baseline \
		--set eval.keystroke_words=null $(ARGS)

ablate: setup ## how far back MODEL reads: context ablation and copy test in nats (losses only), with the n-gram as a check
	$(PY) -m pipeline ablate --config $(CONFIG) --model $(or $(MODEL),models:/marathi-nwp-lstm@champion) --baseline $(ARGS)

probe: setup ## score the probe set with MODEL
	$(PY) -m pipeline probe --config $(CONFIG) --model $(or $(MODEL),models:/marathi-nwp-lstm@champion) $(ARGS)

keystrokes-report: setup ## keystroke savings of the experiment's LSTM, its mixture and the 4-gram (KS_WORDS test words, default all) -> reports/experiment.md
	$(PY) -m pipeline keystrokes --config $(or $(EXPERIMENT_CONFIG),configs/experiment.yaml) --out reports/experiment/keystrokes \
		--model $(or $(MODEL),$(firstword $(wildcard runs/experiment-lstm-lstm-*/checkpoints/best.ckpt)),models:/marathi-nwp-lstm@champion) \
		$(if $(KS_WORDS),--set eval.max_words=$(KS_WORDS)) $(ARGS)
	$(PY) -m pipeline report --config $(or $(EXPERIMENT_CONFIG),configs/experiment.yaml)

experiment: setup ## the comparison grid on the full corpus + reports/experiment.md (BUDGET=minutes, default 120)
	$(PY) -m pipeline experiment --config $(or $(EXPERIMENT_CONFIG),configs/experiment.yaml) $(if $(BUDGET),--budget-minutes $(BUDGET)) $(ARGS)

longrange: setup ## the controlled long-range task alone (<= experiment.longrange_cpu_minutes, 60; finished jobs are reused) -> reports/experiment/longrange/
	$(PY) -m pipeline longrange --config $(or $(EXPERIMENT_CONFIG),configs/experiment.yaml) $(ARGS)

mix: setup ## fit network + 4-gram + cache mixtures on validation for MODEL; evaluate them beside the parts
	$(PY) -m pipeline mix --config $(CONFIG) --model $(or $(MODEL),models:/marathi-nwp-lstm@champion) $(ARGS)

mix-report: setup ## refit and store the experiment LSTM's mixtures; score them on MIX_WORDS test words (5000) -> reports/experiment.md
	$(PY) -m pipeline mix --config $(or $(EXPERIMENT_CONFIG),configs/experiment.yaml) --out reports/experiment/mixture \
		--model $(or $(MODEL),$(firstword $(wildcard runs/experiment-lstm-lstm-*/checkpoints/best.ckpt)),models:/marathi-nwp-lstm@champion) \
		--set eval.max_words=$(or $(MIX_WORDS),5000) --set eval.keystrokes=false --save $(ARGS)
	$(PY) -m pipeline report --config $(or $(EXPERIMENT_CONFIG),configs/experiment.yaml)

gradients: setup ## gradient by distance (init and trained) for MODEL; plot and decay rates
	$(PY) -m pipeline gradients --config $(CONFIG) --model $(or $(MODEL),models:/marathi-nwp-lstm@champion) $(ARGS)

ui: setup ## the MLflow UI on http://127.0.0.1:5000 over the project's store
	$(PY) -m mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host 127.0.0.1 --port 5000

serve: setup ## serve the champion model on http://127.0.0.1:8000 (MODEL=... to choose)
	$(PY) -m pipeline serve --config $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(ARGS)

bench: setup ## benchmarks on the full corpus (configs/full.yaml); results appended to bench/results.json, then docs/benchmarks.md
	$(PY) -m pipeline bench --config $(or $(BENCH_CONFIG),configs/full.yaml) $(ARGS)
	$(PY) -m pipeline.bench_report

bench-report: setup ## regenerate docs/benchmarks.md from bench/results.json
	$(PY) -m pipeline.bench_report

stress: setup ## kill/resume x5 with MLflow history + 60 s of /predict at concurrency 32 -> bench/stress.json
	$(PY) bench/stress.py

clean: ## remove caches, runs and the local MLflow store (keeps .venv)
	rm -rf data/cache runs lightning_logs mlflow.db mlartifacts .pytest_cache
