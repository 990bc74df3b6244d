# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
SHELL := /bin/bash
PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
SERVICES := $(PY) -m example_project.services

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export SEMANTIC_SEARCH_MODEL_CACHE := $(CURDIR)/.cache/models
export XDG_RUNTIME_DIR := $(CURDIR)/.services/run

.PHONY: install test demo screenshots services stop lint bench clean

install: $(STAMP)

$(PY):
	@command -v $(PYTHON_BIN) >/dev/null || { echo "Python 3.11 is required ($(PYTHON_BIN) not found)"; exit 1; }
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# CPU torch first: any other torch request would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

services: install
	@mkdir -p .services/run && chmod 700 .services/run
	$(SERVICES) start

# Starts the services, runs the suite, stops what it started (also on failure).
test: install
	@mkdir -p .services/run && chmod 700 .services/run
	$(SERVICES) run -- $(PY) -m pytest $(PYTEST_ARGS)

demo: install
	@mkdir -p .services/run && chmod 700 .services/run
	$(SERVICES) run -- $(PY) manage.py demo

# The README's screenshots (docs/screenshots/*.png): the demo, then headless Chromium (installed
# with apt if missing) instead of the server; the status page's shot reindexes everything.
screenshots: install
	@mkdir -p .services/run && chmod 700 .services/run
	$(SERVICES) run -- $(PY) manage.py demo --screenshots docs/screenshots

stop:
	@[ -x $(PY) ] && $(SERVICES) stop || true

lint: install
	$(VENV)/bin/ruff check .

clean: stop
	rm -rf .services .cache
