# The README's two commands: `make demo` (run it) and `make test` (test it).
# Both work as root on a fresh Debian 12 machine: they install what they need.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

.PHONY: venv test unit demo lint pool-up pool-down pool-status browser hub-up hub-down hub-status

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { apt-get update -q && $(APT_INSTALL) python3; }
	$(PYTHON) -m venv $(VENV) || { apt-get update -q && $(APT_INSTALL) python3-venv && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The whole suite against the real pool (built and started if needed, left running).
test: venv pool-up browser
	INTERLINK_HTCONDOR_TEST_POOL_CYCLE=1 $(BIN)/pytest tests --junitxml=out/junit.xml -ra

# Unit tests only: no pool.
unit: venv
	$(BIN)/pytest tests/unit -ra

demo: venv pool-up
	$(BIN)/interlink-htcondor demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pool-up: venv
	$(BIN)/interlink-htcondor pool up

pool-down: venv
	$(BIN)/interlink-htcondor pool down

pool-status: venv
	$(BIN)/interlink-htcondor pool status

# Debian's chromium for the browser test (Playwright drives it; no browser is downloaded).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && $(APT_INSTALL) chromium; }

hub-up: venv
	$(BIN)/interlink-htcondor hub up

hub-down: venv
	$(BIN)/interlink-htcondor hub down

hub-status: venv
	$(BIN)/interlink-htcondor hub status
