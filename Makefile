# Two commands do all set-up on a fresh machine:
#   make run    serve on $(HOST):$(PORT) with embedded MongoDB and Redis under ./var
#   make test   run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup test-setup redis-server chromium clean-venv

run: setup
	$(PY) server.py

test: test-setup
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP) redis-server

# The page tests drive Debian's Chromium (never a downloaded browser) with a CJK font.
test-setup: setup chromium

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing the Debian package"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

chromium:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "WenQuanYi Micro Hei"; } || { \
	  echo "installing Debian's chromium and a Chinese font for the page tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei; }

clean-venv:
	rm -rf $(VENV)
