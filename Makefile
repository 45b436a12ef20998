# Two entry points for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint deps test-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

deps: $(BIN)/python
	$(BIN)/pip install -q -e .

test-deps: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	cd tests/peers && npm ci --no-audit --no-fund --loglevel=error

## Run the bridge with embedded defaults (SQLite, generated config.yaml and registration.yaml).
run: deps
	$(BIN)/python -m telebridge -c config.yaml -r registration.yaml

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check telebridge sip smpp media sdp tests benchmarks
	$(BIN)/mypy

## Lint, type-check and run the whole test suite against real peers.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider
