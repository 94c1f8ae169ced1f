# Every target sets up what it needs: a fresh machine with only Python and pip is enough.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench bench-floor bench-stores lint typecheck unit install clean chromium node screenshot

DEMO_STAMP := $(VENV)/.demo-installed

$(BIN)/python:
	@echo "Creating a virtual environment in $(VENV) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing tracestitch and its development toolchain into $(VENV) (first run only) ..."
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo needs only its own extra, not the test toolchain (which includes it).
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then :; else \
	  echo "Installing tracestitch and the demo's dependencies into $(VENV) (first run only) ..."; \
	  $(BIN)/python -m pip install --quiet -e '.[demo]'; fi
	touch $(DEMO_STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: install
	$(BIN)/mypy

# The viewer is tested in a real headless Chromium (Debian's package); install it when we can.
chromium:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "note: /usr/bin/chromium missing and not installable here: the browser test will skip"

# The interop tests run the LangSmith JS SDK (pinned in tests/interop/peers.json) under node.
node: install
	@command -v node >/dev/null && command -v npm >/dev/null || { command -v apt-get >/dev/null && \
	  [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq nodejs npm >/dev/null); } || \
	  echo "note: node/npm missing and not installable here: the JS SDK tests will skip (fail in CI)"
	@! command -v npm >/dev/null || $(BIN)/python tests/interop/node_peer.py || \
	  echo "note: could not install the JS SDK: its tests will install it or fail"

unit: install chromium node
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

demo: $(DEMO_STAMP)
	$(BIN)/python -m tracestitch.demo $(ARGS)

# Regenerate the README's picture of the viewer from the browser test.
screenshot: install chromium
	TRACESTITCH_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest -q tests/collector/test_collector_viewer.py

bench: install
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r bench/requirements-nodeps.txt
	$(BIN)/python bench/run.py $(ARGS)

# tracestitch against the floor (bench/floor.py) and the peers, callgrind instructions and
# all-thread CPU per request and per core hop, in one run (~40 min; ARGS=--quick about 15).
bench-floor: install
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/callgrind_floor.py --measure $(ARGS)

# SQLite against PostgreSQL, one against two collectors, at 1,000,000 stored runs (~15 min).
bench-stores: install
	$(BIN)/python bench/bench_stores.py $(ARGS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
