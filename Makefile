# doclane: `make up` runs the pipeline on one machine, `make test` tests it.
# Each target creates what it needs (.venv with pinned packages) on its own.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline at run time: the embedding model ships inside a package.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PYTEST_ARGS ?=

.PHONY: install up test lint schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0 2>&1 | grep -v 'is ignored' || true
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[parse,embed,dev]' 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import doclane.local.cli, torch, docling, sentence_transformers" 
	touch $(STAMP)

up: install
	$(VENV)/bin/doclane up $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

schemas: install
	$(VENV)/bin/doclane schemas export

clean:
	rm -rf $(VENV) .doclane .pytest_cache
