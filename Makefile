# The two commands of the README:
#   make run   set up a virtualenv, create the embedded SQLite database, load the demo data,
#              and run the server in the foreground (Ctrl-C stops it)
#   make test  lint (ruff, mypy --strict, import-linter) and every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run setup test lint unit integration e2e bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/billingctl db upgrade
	$(BIN)/billingctl load config/demo.yaml
	$(BIN)/radiusd serve

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

test: lint
	$(BIN)/pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
