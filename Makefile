VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

LXT_VENV ?= .venv-lxt

.PHONY: test demo board bench golden

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

# LXT 2.1 (the AttnLRP reference code) patches classes globally and needs transformers 4.52.4: it runs
# only here, in its own virtualenv, and writes the golden files tests/test_lxt_oracle.py compares to.
$(LXT_VENV)/.installed:
	$(PYTHON) -m venv $(LXT_VENV)
	$(LXT_VENV)/bin/python -m pip install torch==2.14.1 torchvision==0.29.1 transformers==4.52.4 lxt==2.1
	touch $@

golden: $(LXT_VENV)/.installed
	$(LXT_VENV)/bin/python scripts/make_lxt_golden.py --out tests/golden
