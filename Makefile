VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# a second venv with the lowest versions pyproject.toml allows, for `make test-floors`
FLOORS_VENV ?= .venv-floors
FLOORS_PY := $(FLOORS_VENV)/bin/python
# fast subset run at the floors: engine, metrics, callback units and Trainer runs, non-finite values,
# interrupts, property-based tests (so the pytest and hypothesis floors are exercised too)
FLOORS_TESTS := tests/engine/test_closed_form.py tests/metrics/test_metrics_contract.py tests/metrics/test_metrics_perturbation.py \
	tests/callbacks/test_callback_units.py tests/callbacks/test_callback_trainer.py tests/metrics/test_nonfinite.py tests/engine/test_interrupts.py \
	tests/engine/test_properties.py

LXT_VENV ?= .venv-lxt

.PHONY: test test-large test-floors docs ci demo board bench golden

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/activate
	$(PY) -m pip install -e ".[dev]"
	# zennit-crp 0.6.0, the CRP oracle of tests/concepts: its pins (torch<2, zennit<=0.4.6) are stale, it runs with
	# zennit 0.5.1 and torch 2, so it is installed without its dependencies
	$(PY) -m pip install --no-deps zennit-crp==0.6.0
	touch $@

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/activate
	$(PY) -m pip install -e .
	touch $@

test: $(VENV)/.installed-dev
	$(PY) -m pytest

# the slow oracle comparisons on full-size networks (all nine composites on VGG16 and ResNet50)
test-large: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m large

$(FLOORS_VENV)/.installed: pyproject.toml .ci/floors.py
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(PYTHON) .ci/floors.py > $(FLOORS_VENV)/constraints.txt
	$(FLOORS_PY) -m pip install -c $(FLOORS_VENV)/constraints.txt -e . pytest hypothesis
	touch $@

# the lowest allowed versions (torchvision-, zennit- and Quantus-free: those tests skip or are left out)
test-floors: $(FLOORS_VENV)/.installed
	$(FLOORS_PY) -m pytest -q -p no:cacheprovider $(FLOORS_TESTS)

$(VENV)/.installed-docs: pyproject.toml | $(VENV)/bin/activate
	$(PY) -m pip install -e ".[docs]"
	touch $@

# API reference from the docstrings (numpydoc); any warning fails the build; output in docs/_build
docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -W --keep-going -E -q -b html docs docs/_build/html

# what CI runs (.ci/run)
ci: test test-large test-floors docs

demo: $(VENV)/.installed
	$(PY) -m lrp_lightning.demo

board: $(VENV)/.installed
	$(VENV)/bin/tensorboard --logdir demo_logs --host 127.0.0.1 --port 6006

bench: $(VENV)/.installed-dev
	$(PY) -m benchmarks.attribution --device cpu
	$(PY) -m benchmarks.metrics --device cpu

# LXT 2.1 (the AttnLRP reference code) patches classes globally and needs transformers 4.52.4: it runs
# only here, in its own virtualenv, and writes the golden files tests/transformer/test_lxt_oracle.py compares to.
$(LXT_VENV)/.installed:
	$(PYTHON) -m venv $(LXT_VENV)
	$(LXT_VENV)/bin/python -m pip install torch==2.14.1 torchvision==0.29.1 transformers==4.52.4 lxt==2.1
	touch $@

golden: $(LXT_VENV)/.installed
	$(LXT_VENV)/bin/python scripts/make_lxt_golden.py --out tests/golden
