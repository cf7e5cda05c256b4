# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install the project with the local model, run a tutorial
#                 notebook end to end against it (the replies stream into the terminal)
#   make test   - create .venv, install the project with its test extras, run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The demo runs the local model: llama-cpp-python builds from source (3 to 4 minutes).
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) install -e ".[local,notebook]"
	touch $@

# The tests run the local model too: llama-cpp-python builds from source (3 to 4 minutes).
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install -e ".[test,local]"
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m aivvm_magic.demo

# Two pytest runs: the notebooks' conftest (which teaches nbval about display updates) must
# not apply to tests/.
test: $(VENV)/.test-installed
	$(PY) -m ruff check aivvm_magic tests bench notebooks/conftest.py
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/

lint: $(VENV)/.test-installed
	$(PY) -m ruff check aivvm_magic tests bench notebooks/conftest.py
	$(PY) -m ruff format --check aivvm_magic tests bench notebooks/conftest.py

bench: $(VENV)/.test-installed
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
