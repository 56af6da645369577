# The two commands: `make run` and `make test`. Both create the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check --quiet -c constraints.txt
PACKAGES := -e plugins/metrics -e plugins/kustomer
SOURCES := pyproject.toml plugins/metrics/pyproject.toml plugins/kustomer/pyproject.toml constraints.txt

AXE := tests/a11y/node_modules/axe-core/axe.min.js

.PHONY: run test bench format translations screenshots clean

run: $(VENV)/.installed
	$(BIN)/surveyhub run

# Test processes (pytest-xdist): PYTEST_WORKERS=auto runs one per core, at most four. The
# default is one process: on two cores the topology test's timing waits did not hold
# next to a second test process (see docs/performance.md, "Suite time").
PYTEST_WORKERS ?= 0
test: $(VENV)/.installed-test $(AXE)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --maxprocesses=4 --durations=30 $(PYTEST_ARGS)

# The benchmarks (docs/performance.md): each prints its ratio against a baseline measured in
# the same run as its last line. They need PostgreSQL (DATABASE_URL, else the local `test`
# database), as `make test` does. The sizes keep the whole under 15 minutes on 2 cores;
# the issue's full sizes: make bench BENCH_SCAN_SEND=10000 BENCH_SCAN_MEMORY=100000.
BENCH_SCAN_SEND ?= 2000
BENCH_SCAN_MEMORY ?= 10000
BENCH_EXPORT ?= 1000000
BENCH_REPORT ?= 1000000
BENCH_CAPTURE ?= 3 3
bench: $(VENV)/.installed-test
	$(BIN)/python bench/kustomer_requests.py
	$(BIN)/python bench/scan_send.py $(BENCH_SCAN_SEND)
	$(BIN)/python bench/scan_memory.py $(BENCH_SCAN_MEMORY)
	$(BIN)/python bench/eligible_to_sent.py
	$(BIN)/python bench/export_memory.py $(BENCH_EXPORT)
	$(BIN)/python bench/report_stats.py $(BENCH_REPORT)
	$(BIN)/python bench/capture_rps.py $(BENCH_CAPTURE)

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SurveyHub needs Python 3.11 or newer: run make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python $(SOURCES)
	@echo "Installing SurveyHub and its built-in plugins into $(VENV)..."
	$(PIP) -e . $(PACKAGES)
	@touch $@

$(VENV)/.installed-test: $(BIN)/python $(SOURCES)
	@echo "Installing SurveyHub, its plugins and the test tools into $(VENV)..."
	$(PIP) -e '.[test]' $(PACKAGES)
	@touch $@ $(VENV)/.installed

# axe-core for the accessibility tests, from npm (pinned by tests/a11y/package-lock.json).
# Without npm the browser tests are skipped locally (CI requires them).
$(AXE): tests/a11y/package.json tests/a11y/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the accessibility tests will be skipped"; fi

# The README's screenshots (docs/screenshots/): the browser test of the set-up steps writes
# every page it passes (needs Chromium, PostgreSQL and Redis, as `make test` does).
screenshots: $(VENV)/.installed-test $(AXE)
	HUB_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/web/test_browser_setup.py tests/test_a11y.py::test_pages_fit_a_phone_and_a_desktop

# Re-extract the messages and merge them into every catalog, then compile (see docs/translating.md).
translations: $(VENV)/.installed-test
	$(BIN)/pybabel extract -F babel.cfg -k N_ -o hub/translations/messages.pot --no-location --sort-output --omit-header .
	$(BIN)/pybabel update -i hub/translations/messages.pot -d hub/translations --ignore-obsolete --width 100 --ignore-pot-creation-date
	$(BIN)/pybabel compile -d hub/translations

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/*.egg-info tests/a11y/node_modules
