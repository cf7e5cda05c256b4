# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install the project with the local model, run a tutorial
#                 notebook end to end against it (the replies stream into the terminal)
#   make test   - create .venv, install the project with its test extras, run every test
# Every version installed comes from the lock, constraints.txt, so a new machine gets what
# the tests passed with. `make lock` refreshes it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
LOCK := constraints.txt
# Build back-ends are pinned too: llama-cpp-python builds from source.
INSTALL := $(PIP) install -c $(LOCK) --build-constraint $(LOCK)
# The layer contracts of pyproject.toml ([tool.importlinter]): which module may import which.
LINT_IMPORTS := $(VENV)/bin/lint-imports --no-cache

.PHONY: demo test lint bench lock clean

# pip comes from the lock first: --build-constraint needs pip 25.3 or newer.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -c $(LOCK) pip

# The demo runs the local model: llama-cpp-python builds from source (4 to 6 minutes).
$(VENV)/.demo-installed: pyproject.toml $(LOCK) | $(PY)
	$(INSTALL) -e ".[local,notebook]"
	touch $@

# The tests run the local model too: llama-cpp-python builds from source (4 to 6 minutes).
$(VENV)/.test-installed: pyproject.toml $(LOCK) | $(PY)
	$(INSTALL) -e ".[test,local]"
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m aivvm_magic.demo

# Two pytest runs: the notebooks' conftest (which teaches nbval about display updates) must
# not apply to tests/.
test: $(VENV)/.test-installed
	$(PY) -m ruff check aivvm_magic tests bench notebooks/conftest.py
	$(LINT_IMPORTS)
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks/

lint: $(VENV)/.test-installed
	$(PY) -m ruff check aivvm_magic tests bench notebooks/conftest.py
	$(PY) -m ruff format --check aivvm_magic tests bench notebooks/conftest.py
	$(LINT_IMPORTS)

# The benchmarks compare with peers (jupyter-ai, llm) whose dependencies pin older releases of
# what the package itself uses (openai, llm), so they get a virtual environment and a lock of
# their own: bench/constraints.txt.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_LOCK := bench/constraints.txt

$(BENCH_PY):
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip --disable-pip-version-check -q install -c $(BENCH_LOCK) pip

$(BENCH_VENV)/.installed: pyproject.toml $(BENCH_LOCK) | $(BENCH_PY)
	$(BENCH_PY) -m pip --disable-pip-version-check -q install -c $(BENCH_LOCK) \
		--build-constraint $(BENCH_LOCK) -e ".[test,local,bench]"
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) bench/run_all.py

# Refreshes the lock: the newest releases that pyproject.toml's ranges (and constraints.in)
# allow, resolved for every platform and every Python from 3.10 on. Then run `make clean test`
# and `make demo`, and commit constraints.txt with the change that needed it.
# `make lock LOCK_UPGRADE=` only adds what a new dependency needs, leaving the rest pinned.
LOCK_UPGRADE ?= --upgrade
COMPILE = $(VENV)/bin/uv pip compile --quiet $(LOCK_UPGRADE) --universal --python-version 3.10 \
	--custom-compile-command "make lock" --extra local --extra notebook --extra test
lock: | $(PY)
	$(PIP) install -c $(LOCK) uv
	$(COMPILE) pyproject.toml constraints.in -o $(LOCK)
	$(COMPILE) --extra bench pyproject.toml constraints.in -o $(BENCH_LOCK)

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info
