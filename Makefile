VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: test demo board bench

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/activate
	$(PY) -m pip install -e ".[dev]"
	touch $@

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/activate
	$(PY) -m pip install -e .
	touch $@

test: $(VENV)/.installed-dev
	$(PY) -m pytest

demo: $(VENV)/.installed
	$(PY) -m lrp_lightning.demo

board: $(VENV)/.installed
	$(VENV)/bin/tensorboard --logdir demo_logs --host 127.0.0.1 --port 6006

bench: $(VENV)/.installed-dev
	$(PY) -m benchmarks.attribution --device cpu
	$(PY) -m benchmarks.metrics --device cpu
