# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The oldest and the newest Python that pyproject.toml declares: the suite runs on each, so a declared
# version is a tested one (.ci/python-for finds them on PATH or in pyenv).
TEST_PYTHONS ?= 3.10 3.13
PIP_QUIET := -q --disable-pip-version-check

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "Installing doitong-nb and its test tools into $(VENV) (first run only)..."
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@$(PY) -m pip install $(PIP_QUIET) -c constraints.txt -e ".[test]"
	@touch $@

.venv-%/.installed: pyproject.toml constraints.txt
	@echo "Installing doitong-nb and its test tools into .venv-$* for Python $* (first run only)..."
	@$$(.ci/python-for $*) -m venv .venv-$*
	@.venv-$*/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	@.venv-$*/bin/python -m pip install $(PIP_QUIET) -c constraints.txt -e ".[test]"
	@touch $@

DEMO ?= notebooks/quickstart.ipynb
BUILD ?= build
DEMO_NAME := $(basename $(notdir $(DEMO)))

.PHONY: demo test unit mutation notebooks messages
# The notebook runs inside $(BUILD), so its images land beside the HTML and its links work from there;
# the kernel logs errors only: its warning about loopback TCP without encryption is noise in a demo.
demo: $(VENV)/.installed  ## run the quickstart notebook against the bundled sandbox (no key needed)
	@mkdir -p $(BUILD)
	@cp $(DEMO) $(BUILD)/$(DEMO_NAME).ipynb
	@echo "Running $(DEMO) against the bundled sandbox..."
	@DOITONG_OUTPUT_DIR=flux_outputs $(PY) -m jupyter nbconvert --to html --execute --log-level WARN \
		--ExecutePreprocessor.extra_arguments=--IPKernelApp.log_level=ERROR $(BUILD)/$(DEMO_NAME).ipynb
	@echo "Open $(BUILD)/$(DEMO_NAME).html; full-resolution images are in $(BUILD)/flux_outputs/"

# The suite runs on TEST_WORKERS processes (pytest-xdist; `auto`: one a core), each with its own sandboxes, output
# and state folders; a notebook's cells and its files' check, the browser tests, and each test module stay together
# in one process (conftest.py, `_worker_group`).
TEST_WORKERS ?= auto
test: $(foreach v,$(TEST_PYTHONS),.venv-$(v)/.installed)  ## the whole suite (notebooks and browser included) on each Python
	@for v in $(TEST_PYTHONS); do \
	  echo "== Python $$v"; .venv-$$v/bin/python -m pytest -n $(TEST_WORKERS) || exit $$?; \
	done

# The fast loop for every edit, in under 10 s: which tests are unit is said in conftest.py. nbval (it runs the
# notebooks, never a unit test) and Hypothesis's plugin (it imports hypothesis at the end of any session) are left
# unloaded: 3 s of imports out of the 10.
unit: $(VENV)/.installed  ## the engine's unit tests in seconds: no server, kernel, browser or other process
	$(PY) -m pytest -q -m unit -p no:nbval -p no:hypothesispytest tests

# MUTANTS narrows the run to some functions, e.g. MUTANTS='"doitong_nb._core.limits*"' (see benchmarks/MUTATION.md).
MUTANTS ?=
mutation: $(VENV)/.installed  ## mutation score of the guarantee-critical modules against the unit tests (tens of minutes)
	$(VENV)/bin/mutmut run $(MUTANTS)
	$(VENV)/bin/mutmut results

# Babel's extract, update and compile (doitong_nb/locale/GLOSSARY.md says why Babel, and the terms). Line
# numbers are left out of the catalog, so that moving code does not change it; `--ignore-dirs` keeps the private
# folders (_core, _notebook...), which Babel skips by default.
LOCALE := doitong_nb/locale
messages: $(VENV)/.installed  ## extract new messages into the catalog, merge them into each language's .po, compile the .mo
	$(VENV)/bin/pybabel -q extract -F babel.cfg --ignore-dirs=".*" --add-location=file --sort-by-file --no-wrap --omit-header \
		-c "Translators:" -o $(LOCALE)/doitong_nb.pot .
	$(VENV)/bin/pybabel -q update -i $(LOCALE)/doitong_nb.pot -d $(LOCALE) -D doitong_nb --no-wrap
	$(VENV)/bin/pybabel -q compile -d $(LOCALE) -D doitong_nb --statistics

# Same setting as under nbval (conftest.py): sanitize.cfg then reads their outputs the same way.
notebooks: $(VENV)/.installed  ## re-execute the example notebooks in place, after a deliberate change to what they show
	@out=$$(mktemp -d -t doitong-nb-tests-XXXX); \
	for nb in $(or $(NOTEBOOKS),notebooks/*.ipynb); do \
	  echo "== $$nb"; stem=$$(basename $$nb .ipynb); \
	  env -u DOITONG_API_KEY -u DOITONG_BASE_URL DOITONG_SANDBOX_SPEED=50 \
	    DOITONG_OUTPUT_DIR=$$out/$$stem/flux_outputs DOITONG_SANDBOX_STATE=$$out/$$stem/sandbox \
	    $(PY) -m jupyter nbconvert --to notebook --execute --inplace --log-level WARN $$nb || exit $$?; \
	done; rm -rf $$out
