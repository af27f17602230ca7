# Two commands do all set-up on a fresh machine:
#   make run    serve on $(HOST):$(PORT) with embedded MongoDB and Redis under ./var
#   make test   run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup redis-server clean-venv

run: setup
	$(PY) server.py

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP) redis-server

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing the Debian package"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

clean-venv:
	rm -rf $(VENV)
