# The two commands a newcomer needs:  make demo   and   make test
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint lock clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/vlrl demo

# two pytest workers, one thread each (two threads per worker on 2 cores spent a fifth of the CPU time waiting on each
# other), the slow tests first and idle workers stealing from busy ones (tests/conftest.py)
test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist worksteal

# everything but the tests marked slow (Lightning fits, vLLM engines, CLI subprocesses, notebooks)
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist worksteal -m "not slow"

# re-resolve requirements/lock-{cpu,gpu}.txt (existing pins kept; UPGRADE=1 moves them to the newest allowed)
lock: setup
	bash scripts/lock.sh

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf runs
