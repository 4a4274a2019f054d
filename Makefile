# The README's two commands: `make demo` (run it) and `make test` (test it).
# Both work as root on a fresh Debian 12 machine: they install what they need.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

.PHONY: venv test unit demo demo-chain lint constraints pool-up pool-down pool-status cluster-up cluster-down \
	cluster-status browser hub-up hub-down hub-status doc-images

venv: $(STAMP)

# Installed with constraints.txt: the versions the suite last passed with.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { apt-get update -q && $(APT_INSTALL) python3; }
	$(PYTHON) -m venv $(VENV) || { apt-get update -q && $(APT_INSTALL) python3-venv && \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# A fresh resolution of '.[dev]' (the newest releases) in a scratch virtualenv, written to
# constraints.txt. Run `make test` with it before committing it.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; \
	  .venv-constraints/bin/pip freeze --all --exclude-editable --exclude pip; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-constraints

# The whole suite against the real pool and the development cluster (built and started if
# needed, left running; the cluster's Go builds happen here, before pytest's per-test
# timeout), with
# line coverage held at 90% or more for the service and the core (the job wrapper runs in
# jobs, not in the measured process). The unit tier runs first, in a process that no
# integration test has left threads in.
test: venv pool-up cluster-up browser
	INTERLINK_HTCONDOR_TEST_POOL_CYCLE=1 $(BIN)/pytest tests/unit tests/install tests/integration --cov --cov-report= \
		--junitxml=out/junit.xml --durations=15 -ra
	$(BIN)/coverage combine --append --quiet out/subprocess-coverage
	$(BIN)/coverage report --include='src/interlink_htcondor/service/*' --fail-under=90
	$(BIN)/coverage report --include='src/interlink_htcondor/core/*' --fail-under=90

# Unit tests only: no pool.
unit: venv
	$(BIN)/pytest tests/unit -ra

demo: venv pool-up
	$(BIN)/interlink-htcondor demo

# The same analysis through Kubernetes: the development cluster (built if needed), the
# dask-kubernetes operator and a VirtualNodeCluster whose workers are HTCondor jobs.
demo-chain: venv cluster-up
	$(BIN)/interlink-htcondor demo --chain

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

cluster-up: venv pool-up
	$(BIN)/interlink-htcondor cluster up

cluster-down: venv
	$(BIN)/interlink-htcondor cluster down

cluster-status: venv
	$(BIN)/interlink-htcondor cluster status

# Debian's chromium for the browser test (Playwright drives it; no browser is downloaded).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && $(APT_INSTALL) chromium; }

hub-up: venv
	$(BIN)/interlink-htcondor hub up

hub-down: venv
	$(BIN)/interlink-htcondor hub down

hub-status: venv
	$(BIN)/interlink-htcondor hub status

# The docs' pictures of the hub, refreshed on purpose: the browser test writes its
# screenshots to out/screenshots/ (never into the tree); a passing run's are copied here.
SCREENSHOTS := hub-dask-sidebar.png hub-zpeak-plot.png
doc-images: venv pool-up browser
	rm -f $(addprefix out/screenshots/,$(SCREENSHOTS))
	$(BIN)/pytest tests/integration/test_hub_browser.py -ra
	cp $(addprefix out/screenshots/,$(SCREENSHOTS)) docs/images/
