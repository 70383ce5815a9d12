# The two commands a newcomer needs:  make demo   and   make test
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint lock clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/vlrl demo

# two pytest workers: on the 2-core CI machine the suite takes 14 min 45 s instead of 20 min 25 s one at a time
test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2

# everything but the tests marked slow (Lightning fits, vLLM engines, CLI subprocesses, notebooks)
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2 -m "not slow"

# re-resolve requirements/lock-{cpu,gpu}.txt (existing pins kept; UPGRADE=1 moves them to the newest allowed)
lock: setup
	bash scripts/lock.sh

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf runs
