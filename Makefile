# `make run` and `make test` set up .venv first; a second `make setup` installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.setup-done

.PHONY: setup browser run test test-all lint bench clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	# davisinteractive 1.0.4 builds only against an already installed numpy + cython.
	$(PIP) install numpy cython
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install --no-build-isolation --no-deps --no-cache-dir davisinteractive==1.0.4
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

# Debian's chromium and chromedriver for the browser test (tests/tools/test_browser.py; it skips without
# them): installed as root from Debian's archive, nothing to do when both are there. CI calls it.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver are installed"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver; \
	fi

run: setup
	$(PY) session_runner.py

test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m agent.bench

clean:
	rm -rf $(VENV) outputs
