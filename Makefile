# The two commands a newcomer needs:  make demo   and   make test
PY := .venv/bin/python
TINY := runs/tiny
DATA := runs/data/synthetic

.PHONY: setup demo test lint clean

setup:
	bash scripts/setup.sh

$(TINY)/config.json: | setup
	$(PY) -m lightning_modules.tiny_model $(TINY)

$(DATA)/train.jsonl: | setup
	$(PY) -m datamodules.synthetic $(DATA) --train 1024 --val 96

demo: setup $(TINY)/config.json $(DATA)/train.jsonl
	.venv/bin/vlrl fit -c configs/demo_sft.yaml

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf runs
