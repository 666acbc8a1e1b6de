# VitalWatch: `make demo` and `make test` do all set-up on a fresh Debian / Raspberry Pi OS machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes (pytest-xdist). Most integration tests wait on real brokers, daemons and timers, so
# three workers keep two cores busy; TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3

include mk/install.mk
include mk/release.mk

.PHONY: demo test lint typecheck unit bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: simulated monitors, an embedded broker, the daemon, and alerts printed as a nurse reads them
## (make demo DEMO_ARGS=--alarm-manager: every alert also as IHE PCD-04 to an alarm-manager double)
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/vitalwatch demo $(DEMO_ARGS)

## test: lint, strict typing, and the whole test suite against a real Mosquitto and PostgreSQL
test: $(STAMP)
	scripts/ensure-mosquitto.sh
	scripts/ensure-postgresql.sh
	scripts/ensure-browser.sh
	$(MAKE) lint typecheck
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check vitalwatch drivers simulators tests bench

typecheck: $(STAMP)
	scripts/typecheck.sh $(BIN)

## bench: benchmarks (never part of `make test`; these machines are noisy)
bench: $(STAMP)
	$(BIN)/python -m bench

## fuzz: every driver on fresh seeds for FUZZ_SECONDS each, plus the hostile-input timings (not in `make test`)
FUZZ_SECONDS ?= 30
fuzz: $(STAMP)
	$(BIN)/python -m bench.fuzz_drivers --seconds $(FUZZ_SECONDS) --pathological

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
