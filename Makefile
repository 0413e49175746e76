# fedge: `make demo` runs the simulation preset, `make test` runs lint, types and tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedge-installed
export FLWR_TELEMETRY_ENABLED := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test lint typecheck pytest bench bench-ab bench-personal bench-simulate bench-security bench-codecs bench-decisions bench-agent bench-coordinator bench-startup bench-fleet bench-pm bench-forecast bench-deploy bench-failover bench-monitoring agent-bundle images system-deps clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "fedge needs $(PYTHON) on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedge simulate --preset demo --name demo

system-deps:
	@bash deploy/system-deps.sh

test: $(STAMP) system-deps lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: bench-simulate bench-security bench-codecs bench-decisions bench-agent bench-coordinator bench-startup bench-fleet bench-forecast bench-deploy bench-monitoring

bench-simulate: $(STAMP)
	$(BIN)/python -m bench.simulate

# Per-lead-time accuracy of every method on the demo and hard presets, alert scores and the
# targets met (make bench-forecast [ARGS="--quick --presets hard"]): bench/results/forecast.json.
bench-forecast: $(STAMP)
	$(BIN)/python -m bench.forecast $(ARGS)

# The federated model adapted per site (fedavg+cal, +ft, +ft+cal, +head) against fedavg and
# local, overall and on the sites unlike the majority (make bench-personal
# [ARGS="--preset hard --sites 10 --step-minutes 15"]): bench/results/personal_<preset>*.json.
bench-personal: $(STAMP)
	$(BIN)/python -m bench.personal $(ARGS)

# A preset's sites through the PM-file import and the CSV import: bench/results/pm_import.json.
bench-pm: $(STAMP)
	$(BIN)/python -m bench.pm_import

bench-security: $(STAMP)
	$(BIN)/python -m bench.security

bench-codecs: $(STAMP)
	$(BIN)/python -m bench.codecs

bench-agent: $(STAMP) system-deps
	$(BIN)/python -m bench.agent

bench-decisions: $(STAMP)
	$(BIN)/python -m bench.decisions

bench-coordinator: $(STAMP) system-deps
	$(BIN)/python -m bench.coordinator

# Paired against a baseline commit (make bench-ab BASE=<rev> [REPEAT=n] [BENCHES=a,b]): bench/results/ab.json.
bench-ab: $(STAMP) system-deps
	@test -n "$(BASE)" || { echo "make bench-ab needs BASE=<commit>"; exit 2; }
	$(BIN)/python -m bench.ab --base $(BASE) --repeat $(or $(REPEAT),1) $(if $(BENCHES),--benches $(BENCHES))

bench-startup: $(STAMP) system-deps
	$(BIN)/python -m bench.startup

# The whole live system: 20 agents with their SuperNodes, a few minutes of the loop.
bench-fleet: $(STAMP) system-deps
	$(BIN)/python -m bench.fleet

# The gNB inference agent as one directory with its own interpreter, no venv needed:
# dist/fedge-agent/ (cached on its sources' hash under build/bundle/; docs/deploy.md).
agent-bundle: $(STAMP)
	$(BIN)/python deploy/bundle/build.py --out dist/fedge-agent

# OCI images without a daemon (buildah, vfs storage under build/oci/): the agent FROM
# scratch around the bundle, as localhost/fedge-agent:0.1.0 (docs/deploy.md).
images: $(STAMP) system-deps
	$(BIN)/python deploy/oci/build.py

# Bundle size, cold starts, PyInstaller against shiv, the image: bench/results/deploy.json.
bench-deploy: $(STAMP) system-deps
	$(BIN)/python -m bench.deploy
	$(BIN)/python -m bench.failover

# Coordinator failover (two replicas on PostgreSQL, the leader killed): deploy.json's "failover".
bench-failover: $(STAMP)
	$(BIN)/python -m bench.failover

bench-monitoring: $(STAMP)
	$(BIN)/python -m bench.monitoring

clean:
	rm -rf runs .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .grimp_cache
