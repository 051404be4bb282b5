# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing and installs from
# the pinned constraints.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geosdm-installed
DEMO_DIR ?= demo-output

.PHONY: demo test install clean bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geosdm demo run --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
