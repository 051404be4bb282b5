# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing and installs from
# the pinned constraints.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geosdm-installed
DEMO_DIR ?= demo-output

.PHONY: demo test test-all install clean bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geosdm demo run --out $(DEMO_DIR)

# `make test`: everything but the end-to-end runs marked `slow` (the pytest marker); `make test-all` (what CI,
# .ci/run, runs): every test.
test: $(STAMP)
	$(PY) -m pytest -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
