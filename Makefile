# The two commands of the README. Both create and fill .venv when it is missing.
VENV  := .venv
PY    := $(VENV)/bin/python
CORE  := $(VENV)/.installed-core
TEST  := $(VENV)/.installed-test
BENCH := $(VENV)/.installed-bench

.PHONY: demo test bench

$(CORE): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(CORE)

# The tests exercise every optional feature: ecosystem optimizers, trackers, the notebook, the JAX peer.
$(TEST): $(CORE)
	$(PY) -m pip install --quiet -e '.[test,optimizers,tracking,notebook,bench]'
	touch $(TEST)

$(BENCH): $(CORE)
	$(PY) -m pip install --quiet -e '.[bench,optimizers]'
	touch $(BENCH)

demo: $(CORE)
	$(PY) -m workflows run sweeps.yaml --sweep quick

# Four test processes on any machine: most of the suite's time is waiting (Ray starting, drivers
# signalled, clusters joining), not computing. Tests sharing a module's fixture run in one process
# (tests/conftest.py marks their xdist group), so the fixture is still made once; the groups go out
# in the suite's order (slow first), not largest first.
TEST_WORKERS ?= 4

test: $(TEST)
	RAY_USAGE_STATS_ENABLED=0 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

bench: $(BENCH)
	$(PY) benchmarks/run.py
