# trubrics-mp: every command a developer or CI needs. Nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= auto
OTHER_PYTHONS  ?= 3.9 3.13

.PHONY: venv system-deps test test-pipeline test-other-pythons lint typecheck demo bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,docs,fast]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the host tests need (CI runs as root on a fresh machine).
system-deps:
	@command -v redis-server >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }

lint: venv
	$(BIN)/ruff check trubrics_mp tests benchmarks
	$(BIN)/ruff format --check trubrics_mp tests benchmarks

typecheck: venv
	$(BIN)/mypy trubrics_mp tests benchmarks

docs: venv
	$(BIN)/mkdocs build --strict --site-dir site

# The oldest and newest supported Pythons run the unit layer and the process tests too.
test-other-pythons:
	PYTEST_WORKERS=2 tests/other_pythons.sh $(OTHER_PYTHONS)

# The unit layer first (in-process, a few seconds), then the process and host layers.
test: lint typecheck system-deps docs
	$(BIN)/pytest --durations=5 tests/unit
	$(BIN)/pytest -n $(PYTEST_WORKERS) --durations=15 tests/process tests/host
	$(MAKE) test-other-pythons

# Only the host tests of the one-pipeline-per-machine promise.
test-pipeline: venv system-deps
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m pipeline_per_machine tests/host

bench: venv
	$(BIN)/pip install -q -e '.[bench,fast]'
	$(BIN)/python -m benchmarks

demo: venv
	$(BIN)/trubrics-mp demo

clean:
	rm -rf $(VENV) .venv-3.* build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache site
