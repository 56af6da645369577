# The two commands: `make run` and `make test`. Both create the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check --quiet -c constraints.txt
PACKAGES := -e plugins/metrics -e plugins/kustomer
SOURCES := pyproject.toml plugins/metrics/pyproject.toml plugins/kustomer/pyproject.toml constraints.txt

.PHONY: run test lint format clean

run: $(VENV)/.installed
	$(BIN)/surveyhub run

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

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

clean:
	rm -rf $(VENV) build *.egg-info plugins/*/*.egg-info
