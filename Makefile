# Two entry points for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# matrix-sydent, the reference identity server the identity-lookup tests run against, lives in a venv of its
# own: it pins signedjson and its own Twisted stack. Versions in tests/peers/sydent-requirements.txt.
SYDENT_VENV ?= .venv-sydent

.PHONY: run test lint deps test-deps sydent

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

deps: $(BIN)/python
	$(BIN)/pip install -q -e .

test-deps: $(BIN)/python sydent
	$(BIN)/pip install -q -e '.[test]'
	cd tests/peers && npm ci --no-audit --no-fund --loglevel=error

$(SYDENT_VENV)/.installed: tests/peers/sydent-requirements.txt
	$(PY) -m venv $(SYDENT_VENV)
	$(SYDENT_VENV)/bin/pip install -q -r tests/peers/sydent-requirements.txt
	$(SYDENT_VENV)/bin/python -c 'import sydent.sydent'
	touch $@

sydent: $(SYDENT_VENV)/.installed

## Run the bridge with embedded defaults (SQLite, generated config.yaml and registration.yaml).
run: deps
	$(BIN)/python -m telebridge -c config.yaml -r registration.yaml

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check telebridge sip smpp media sdp tests benchmarks
	$(BIN)/mypy

## Lint, type-check and run the whole test suite against real peers.
test: lint
	$(BIN)/python -c 'import media._fastpath'  # the C relay must have been built here
	SYDENT_PYTHON=$(abspath $(SYDENT_VENV))/bin/python $(BIN)/python -m pytest -q -p no:cacheprovider
	# The media tests again on the pure-Python relay (what runs where the C path cannot be built).
	TELEBRIDGE_MEDIA_FASTPATH=0 $(BIN)/python -m pytest -q -p no:cacheprovider tests/media
