# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The oldest and the newest Python that pyproject.toml declares: the suite runs on each, so a declared
# version is a tested one (.ci/python-for finds them on PATH or in pyenv).
TEST_PYTHONS ?= 3.10 3.13
PIP_QUIET := -q --disable-pip-version-check

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e ".[test]"
	touch $@

.venv-%/.installed: pyproject.toml constraints.txt
	$$(.ci/python-for $*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	.venv-$*/bin/python -m pip install $(PIP_QUIET) -c constraints.txt -e ".[test]"
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed  ## run the quickstart notebook against the bundled sandbox (no key needed)
	$(PY) -m jupyter nbconvert --to html --execute notebooks/quickstart.ipynb --output-dir build
	@echo "Open build/quickstart.html; full-resolution images are in notebooks/flux_outputs/"

test: $(foreach v,$(TEST_PYTHONS),.venv-$(v)/.installed)  ## the whole suite (notebooks and browser included) on each Python
	@for v in $(TEST_PYTHONS); do \
	  echo "== Python $$v"; .venv-$$v/bin/python -m pytest || exit $$?; \
	done

.PHONY: unit
unit: $(VENV)/.installed  ## the fast loop for every edit: the engine's unit tests, no server, kernel or browser
	$(PY) -m pytest -q -m unit tests
