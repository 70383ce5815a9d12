# The two commands a newcomer needs:  make demo   and   make test
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/vlrl demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

# everything but the tests marked slow (Lightning fits, vLLM engines, CLI subprocesses, notebooks)
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf runs
