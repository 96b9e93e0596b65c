# Speechgate — `make run` starts the gateway, `make test` runs the tests (`make test-fast`: the
# unit tier, in seconds), `make lint` runs ruff, mypy and vulture.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server espeak-ng sox chromium nginx

.PHONY: run test test-fast install install-test system-deps node-deps tools bench lint clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install -e .
	@touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/speechgate serve

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[test]'
	# Public-domain speech recordings for the tests (we read its assets only).
	$(PIP) install --no-deps moonshine-voice==0.1.5
	@touch $@

install-test: $(VENV)/.installed-test

# checkov (the security linter of tests/deploy) in its own virtualenv: it pins packaging<24,
# which the test tools' pytest cannot share.
TOOLS ?= .venv-tools
CHECKOV_VERSION := 3.3.30
$(TOOLS)/.installed: Makefile
	@test -x $(TOOLS)/bin/python || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip --disable-pip-version-check -q install checkov==$(CHECKOV_VERSION)
	@touch $@

tools: $(TOOLS)/.installed

# Debian packages the tests use: a real redis-server, espeak-ng/sox for synthetic speech,
# chromium for the demo-page test, nginx for the rolling-deploy test.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

node-deps:
	@if [ -f tests/node/package-lock.json ]; then npm ci --silent --no-audit --no-fund --prefix tests/node; fi

test: install-test system-deps node-deps tools
	$(PY) -m pytest

# The unit tier: no gateway, no redis-server, no provider fake, no model decoding speech
# (markers set at collection by tests/tiers.py). Needs no Debian packages.
FAST_TESTS := not slow and not e2e and not server

test-fast: install-test
	$(PY) -m pytest -m "$(FAST_TESTS)"

# ruff, mypy (strict on the packages) and vulture (dead code; settings in pyproject.toml).
lint: install-test
	$(VENV)/bin/ruff check app adapters auth config tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/vulture

bench: install-test system-deps
	$(PY) -m bench.bench_local
	$(PY) -m bench.bench_relay
	$(PY) -m bench.bench_auth
	$(PY) -m bench.bench_fuzz
	$(PY) -m bench.bench_workers

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
