# The two set-up commands of the README: `make demo` and `make test` each
# create .venv, install the package with pinned dependencies, and run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.bench-installed

.PHONY: demo test test-all lint format docs bench bench-scaling clean

$(INSTALLED): setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.txt -e ".[cpu,experiments,test,lint,bench,docs]"
	touch $@

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet -c requirements.txt -e ".[cpu,experiments,bench]"
	touch $@

demo: $(INSTALLED)
	$(PY) -m launch.regression --workdir=workdir/regression_demo --quick

# Every core runs tests (pytest-xdist); a class's tests share one worker.
test: $(INSTALLED)
	$(PY) -m pytest -m "not slow" -q -n auto --dist loadscope --durations=20 tests

test-all: $(INSTALLED)
	$(PY) -m pytest -q -n auto --dist loadscope tests

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff format .

# The API reference and the pages of docs/ as a site (mkdocs.yml);
# warnings are errors, as in tests/docs_test.py.
docs: $(INSTALLED)
	$(PY) -m mkdocs build --strict --site-dir site

# MLP steps take a fraction of a millisecond: 200 steps per repeat and 15
# repeats keep each repeat long enough to time on a busy machine.
bench: $(BENCH_INSTALLED)
	JAX_PLATFORMS=cpu $(PY) -m benchmarks.train_step_benchmark --workloads=mlp_a,mlp_b,mlp_c --steps=200 --repeats=15 --output=docs/benchmark.md
	JAX_PLATFORMS=cpu $(PY) -m benchmarks.train_step_benchmark --workloads=atari --output=docs/benchmark_atari.md

bench-scaling: $(BENCH_INSTALLED)
	JAX_PLATFORMS=cpu $(PY) -m benchmarks.scaling_benchmark --output=docs/scaling.md --figure=docs/scaling.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
