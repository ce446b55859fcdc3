# Baton: two commands on a fresh machine — `make run` (the fleet) and `make test` (the tests).
# Each installs what it needs on first use: a venv with the Python packages, Kafka's jars, PostgreSQL.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | sha1sum | cut -c1-12)
PYTEST := $(BIN)/pytest
# The official AsyncAPI parser (npm, exact versions from the committed lock) for the contract tests.
ASYNCAPI_TOOLS := tests/contract/asyncapi
NPM_STAMP := $(ASYNCAPI_TOOLS)/node_modules/.installed-$(shell cat $(ASYNCAPI_TOOLS)/package-lock.json | sha1sum | cut -c1-12)
# The board's static assets: htmx and its SSE extension from npm (exact versions from the committed
# lock), copied next to the board's CSS; axe-core (same lock) for the browser tests.
BOARD_WEB := web
BOARD_VENDOR := services/notification/static/vendor
BOARD_STAMP := $(BOARD_WEB)/node_modules/.installed-$(shell cat $(BOARD_WEB)/package-lock.json | sha1sum | cut -c1-12)
# Debian's Chromium and its WebDriver: the browser tests drive the board in them (Selenium).
BROWSER_PACKAGES := chromium chromium-driver
# uv resolves for every platform and Python >= 3.11, so one lock serves laptops, CI and the image.
# Debian's packages that build and run the images (catatonit is the containers' init).
CONTAINER_PACKAGES := podman runc catatonit mmdebstrap
COMPILE := $(BIN)/uv pip compile pyproject.toml requirements/tools.in --universal --python-version 3.11 --generate-hashes --quiet

.PHONY: help browser install lock test-prod kafka stack-up stack-down run test test-fast test-python test-containers lint contracts demo bench chaos clean

help:
	@echo "make run        start Kafka, PostgreSQL and the five services (Ctrl-C stops all)"
	@echo "make test       install everything needed and run unit, contract, integration, e2e and browser tests"
	@echo "make test-fast  unit + contract tests only (seconds, no broker or database)"
	@echo "make test-python PY=3.13  unit + contract tests under another Python, in .venv-py3.13"
	@echo "make lint       ruff + mypy + import boundaries"
	@echo "make test-prod  the installed wheel, as deployed (non-root, manifests' env), on the secured broker"
	@echo "make test-containers  build the images with Podman, run the Compose stack, one order to delivered"
	@echo "make lock       refresh requirements/*.lock after changing pins in pyproject.toml"
	@echo "make demo       seed data and play a channel submitting orders, showing orders by status"
	@echo "make kafka      download (once) and start the local Kafka broker"
	@echo "make bench      throughput, latency, CPU and memory of the fleet vs the bare transport"
	@echo "make chaos      20,000 orders while processes are killed, the broker and database restarted"

# Exactly the locked, hashed set (runtime + dev + pip/setuptools), then Baton itself with no resolution.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	# setuptools leaves a baton.egg-info in the checkout; processes started here would read its
	# entry points (a snapshot) before the virtualenv's, so it goes: the venv's metadata is the truth.
	rm -rf baton.egg-info
	$(BIN)/pip check
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Exactly package-lock.json, no install scripts (the parser needs none), into the folder's node_modules/.
$(NPM_STAMP): $(ASYNCAPI_TOOLS)/package.json $(ASYNCAPI_TOOLS)/package-lock.json
	npm ci --prefix $(ASYNCAPI_TOOLS) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

# After changing a pin in pyproject.toml (or requirements/tools.in): re-resolve both locks from PyPI.
lock: $(STAMP)
	$(COMPILE) -o requirements/runtime.lock
	$(COMPILE) --extra dev -o requirements/dev.lock

$(BOARD_STAMP): $(BOARD_WEB)/package.json $(BOARD_WEB)/package-lock.json
	npm ci --prefix $(BOARD_WEB) --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(BOARD_VENDOR)
	cp $(BOARD_WEB)/node_modules/htmx.org/dist/htmx.min.js $(BOARD_WEB)/node_modules/htmx-ext-sse/dist/sse.min.js $(BOARD_VENDOR)/
	touch $(BOARD_STAMP)

browser:
	@dpkg-query -W $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES); \
	  else echo "make: not root, so $(BROWSER_PACKAGES) are not installed: the browser tests need them" >&2; fi

install: $(STAMP) $(NPM_STAMP) $(BOARD_STAMP) browser
	$(BIN)/baton stack fetch

kafka: install
	$(BIN)/baton stack up --kafka-only

stack-up: install
	$(BIN)/baton stack up

stack-down: install
	$(BIN)/baton stack down

run: install
	$(BIN)/baton up

test: install
	$(PYTEST) -m "unit or contract or integration or e2e or chaos or browser" -p no:cacheprovider

# The production profile: the built wheel in a virtualenv outside the repository, run as a non-root
# user with the manifests' environment, on the secured broker with ACLs and per-service roles.
test-prod: install
	$(PYTEST) -m prod -p no:cacheprovider

test-fast: $(STAMP) $(NPM_STAMP) $(BOARD_STAMP)
	$(PYTEST) -m "unit or contract" -q -p no:cacheprovider

# The unit and contract tiers under another Python (python$(PY) on the PATH, else pyenv's $(PY)), in
# its own venv from the same lock: the lock is resolved for every Python from 3.11 on.
PY ?= 3.13
test-python:
	@python=$$( { python$(PY) -c 'import sys; print(sys.executable)' || PYENV_VERSION=$(PY) pyenv which python3; } 2>/dev/null ); \
	  "$${python:-false}" -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] != "$(PY)")' 2>/dev/null \
	    || { echo "no Python $(PY) here (python$(PY), or pyenv's $(PY))" >&2; exit 1; }; \
	  $(MAKE) --no-print-directory test-fast PYTHON=$$python VENV=.venv-py$(PY)

# The images built with Podman from Debian's packages (installed here when missing) and the Compose
# stack run with podman-compose; Podman's storage is kept in .cache/containers between runs.
test-containers: $(STAMP) $(BOARD_STAMP)
	@dpkg-query -W $(CONTAINER_PACKAGES) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CONTAINER_PACKAGES); }
	$(PYTEST) -m containers -p no:cacheprovider tests/containers

lint: $(STAMP)
	$(BIN)/ruff check libs services tests bench
	$(BIN)/ruff format --check libs services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

contracts: $(STAMP)
	$(BIN)/baton contracts

demo: install
	$(BIN)/baton demo

bench: install
	$(BIN)/python -m bench.run

chaos: install
	$(BIN)/python -m tests.chaos.harness --orders 20000

clean:
	rm -rf $(VENV) .venv-py* .cache
