# The two commands a new user needs (see README):
#   make demo   installs everything, then synthetic corpus -> prepare -> train -> evaluate, and prints results
#   make test   installs everything, then runs the default test suite (no GPU, no ../shared needed)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed explicitly first: an unpinned torch requirement pulls gigabytes of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
DEMO_DIR ?= $(CURDIR)/outputs/demo
DEMO_LINES ?= 100000
DEMO_EXTRA ?=
DEMO_ARGS = data.inputs='[$(DEMO_DIR)/corpus/corpus.log]' data.output_dir=$(DEMO_DIR)/prepared \
	train.bundle_dir=$(DEMO_DIR)/model train.storage_path=$(DEMO_DIR)/ray_results $(DEMO_EXTRA)
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m ray_logmilp.synthetic --out $(DEMO_DIR)/corpus --lines $(DEMO_LINES) --seed 0 --quiet
	$(PY) jobs/prepare.py --config configs/synthetic.yaml $(DEMO_ARGS)
	$(PY) jobs/evaluate.py --config configs/synthetic.yaml $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf outputs .pytest_cache
