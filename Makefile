# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

.PHONY: demo test mutation
demo: $(VENV)/.installed  ## run the quickstart notebook against the bundled sandbox (no key needed)
	$(PY) -m jupyter nbconvert --to html --execute notebooks/quickstart.ipynb --output-dir build
	@echo "Open build/quickstart.html; full-resolution images are in notebooks/flux_outputs/"

test: $(VENV)/.installed  ## the whole test suite, notebooks (nbval) and browser tests included
	$(PY) -m pytest

mutation: $(VENV)/.installed  ## mutation score of the guarantee-critical modules (slow; see benchmarks/MUTATION.md)
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results
