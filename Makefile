# The two set-up commands of the README: `make demo` and `make test` each
# create .venv, install the package with pinned dependencies, and run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# Each target installs the extras it needs into .venv, once (a stamp file
# per set): `make demo` gets no test, lint, docs or benchmark tools (JAX).
EXTRAS_demo := cpu,experiments
EXTRAS_test := cpu,experiments,test,docs
EXTRAS_lint := lint
EXTRAS_docs := docs
EXTRAS_bench := cpu,experiments,bench

# The core tests again, on the lowest versions of setup.py's ranges
# (requirements-lowest.txt), in their own venv; with the experiment tests
# that exercise each experiments package's floor. A few minutes.
LOWEST_VENV := .venv-lowest
LOWEST_PY := $(LOWEST_VENV)/bin/python
LOWEST_TESTS := $(addprefix tests/,$(addsuffix _test.py,\
  private_api derivatives projections inputs targets model \
  extras atari initializers atari_env tfds_images image_data \
  synthetic_gradients launch_files launch_flag_checks launch_common))

.PHONY: demo test test-lowest test-all wheel-test lint format docs bench bench-scaling clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: setup.py requirements.txt | $(PY)
	$(PY) -m pip install --quiet -c requirements.txt -e ".[$(EXTRAS_$*)]"
	touch $@

$(LOWEST_VENV)/.installed: setup.py requirements-lowest.txt
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_PY) -m pip install --quiet --upgrade pip
	$(LOWEST_PY) -m pip install --quiet -c requirements-lowest.txt -e ".[cpu,experiments,test]"
	touch $@

demo: $(VENV)/.installed-demo
	$(PY) -m launch.regression --workdir=workdir/regression_demo --quick

# Every core runs tests (pytest-xdist); a class's tests share one worker.
# Then the core tests on the lowest supported versions.
test: $(VENV)/.installed-test
	$(PY) -m pytest -m "not slow" -q -n auto --dist loadscope --durations=20 tests
	$(MAKE) --no-print-directory test-lowest

test-lowest: $(LOWEST_VENV)/.installed
	$(LOWEST_PY) -m pytest -m "not slow" -q -n auto --dist loadscope $(LOWEST_TESTS)

test-all: $(VENV)/.installed-test
	$(PY) -m pytest -q -n auto --dist loadscope tests

# Builds the sdist and the wheel, installs the wheel with `[cpu]` alone into
# a fresh venv and trains a SobolevModel there (tests/packaging_test.py).
wheel-test: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow tests/packaging_test.py

lint: $(VENV)/.installed-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-lint
	$(VENV)/bin/ruff format .

# The API reference and the pages of docs/ as a site (mkdocs.yml);
# warnings are errors, as in tests/docs_test.py.
docs: $(VENV)/.installed-docs
	$(PY) -m mkdocs build --strict --site-dir site

# MLP steps take a fraction of a millisecond: 200 steps per repeat and 15
# repeats keep each repeat long enough to time on a busy machine.
bench: $(VENV)/.installed-bench
	JAX_PLATFORMS=cpu $(PY) -m benchmarks.train_step_benchmark --workloads=mlp_a,mlp_b,mlp_c --steps=200 --repeats=15 --output=docs/benchmark.md
	JAX_PLATFORMS=cpu $(PY) -m benchmarks.train_step_benchmark --workloads=atari --output=docs/benchmark_atari.md

bench-scaling: $(VENV)/.installed-bench
	JAX_PLATFORMS=cpu $(PY) -m benchmarks.scaling_benchmark --output=docs/scaling.md --figure=docs/scaling.png

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache .ruff_cache *.egg-info site
