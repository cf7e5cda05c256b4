# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install the project, run the demo
#   make test   - create .venv, install the project with its test extras, run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install -e ".[test]"
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m aivvm_magic.demo

test: $(VENV)/.test-installed
	$(PY) -m ruff check aivvm_magic tests bench
	$(PY) -m pytest

lint: $(VENV)/.test-installed
	$(PY) -m ruff check aivvm_magic tests bench
	$(PY) -m ruff format --check aivvm_magic tests bench

bench: $(VENV)/.test-installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
