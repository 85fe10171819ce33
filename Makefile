# trubrics-mp: every command a developer or CI needs. Nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= auto

.PHONY: venv test lint typecheck unit demo bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,docs]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check trubrics_mp tests
	$(BIN)/ruff format --check trubrics_mp tests

typecheck: venv
	$(BIN)/mypy trubrics_mp

test: lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --durations=15 tests

demo: venv
	$(BIN)/trubrics-mp demo

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache site
