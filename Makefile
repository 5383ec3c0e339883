# vlmtrader: `make run` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config/paper-sim.yaml
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The IB soak test (tests/integration/test_daemon_ib_soak.py) runs this long inside `make test`, so the
# suite stays under 20 minutes on a 2-core CI machine; `make soak` runs the full 10-minute soak.
SOAK_SECONDS ?= 150

.PHONY: help venv native run test lint typecheck unit soak bench bench-quick mosquitto chromium clean

help:
	@echo "make run    - set up .venv and run the daemon in paper-sim mode ($(CONFIG))"
	@echo "make test   - set up .venv and run lint, types and the whole test suite"
	@echo "make bench  - run the benchmarks into build/bench/<commit>.json (figures, not pass/fail)"
	@echo "make bench-quick - the benches that need no model bundle, smaller (a few minutes)"
	@echo "make lint   - ruff check + ruff format --check"
	@echo "make native - compile the event core with mypyc into build/native (make venv runs it)"

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vlmtrader needs Python >= 3.11; set PY=python3.11")'
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# torch is pinned to exactly 2.13.0 (a CPU wheel); install it first so nothing pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,ray,multigpu]'
	@touch $(STAMP)

venv: native

# The event core compiled with mypyc into build/native/ (strategy/native.py): used only while it
# matches the sources; a failed compile prints why and the core runs as pure Python.
native: $(STAMP)
	@$(BIN)/python -c 'import sys; from strategy.native import main; sys.exit(main())'

run: venv
	$(BIN)/vlmtrader run --config $(CONFIG)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto (Debian package) for the MQTT tests"; \
	    (apt-get install -y -q mosquitto >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mosquitto >/dev/null)); \
	  else \
	    echo "mosquitto is missing: run 'sudo apt-get install mosquitto' (the MQTT tests need it)"; exit 1; \
	  fi; }

# The dashboard's browser tests drive Debian's headless Chromium through its chromedriver (selenium).
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (Debian packages) for the dashboard's browser tests"; \
	    (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null)); \
	  else \
	    echo "chromium is missing: run 'sudo apt-get install chromium chromium-driver' (the dashboard's browser tests need it)"; exit 1; \
	  fi; }

unit: venv
	$(BIN)/pytest -q -m "not integration"

test: venv mosquitto chromium lint typecheck
	VLMTRADER_IB_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -q

soak: venv
	VLMTRADER_IB_SOAK_SECONDS=600 $(BIN)/pytest -q tests/integration/test_daemon_ib_soak.py

# One JSON of every figure (build/bench/<commit>.json, or BENCH_OUT=path) for bench/compare.py;
# `make bench-quick` runs the benches that need no model bundle, smaller and with fewer repeats.
bench: venv
	$(BIN)/python bench/run_all.py $(if $(BENCH_OUT),--out $(BENCH_OUT))

bench-quick: venv
	$(BIN)/python bench/run_all.py --quick $(if $(BENCH_OUT),--out $(BENCH_OUT))

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache build *.egg-info
