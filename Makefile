# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	@echo "Installing doitong-nb and its test tools into $(VENV) (first run only)..."
	@python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	@touch $@

DEMO ?= notebooks/quickstart.ipynb
BUILD ?= build
DEMO_NAME := $(basename $(notdir $(DEMO)))

.PHONY: demo test
# The notebook runs inside $(BUILD), so its images land beside the HTML and its links work from there;
# the kernel logs errors only: its warning about loopback TCP without encryption is noise in a demo.
demo: $(VENV)/.installed  ## run the quickstart notebook against the bundled sandbox (no key needed)
	@mkdir -p $(BUILD)
	@cp $(DEMO) $(BUILD)/$(DEMO_NAME).ipynb
	@echo "Running $(DEMO) against the bundled sandbox..."
	@DOITONG_OUTPUT_DIR=flux_outputs $(PY) -m jupyter nbconvert --to html --execute --log-level WARN \
		--ExecutePreprocessor.extra_arguments=--IPKernelApp.log_level=ERROR $(BUILD)/$(DEMO_NAME).ipynb
	@echo "Open $(BUILD)/$(DEMO_NAME).html; full-resolution images are in $(BUILD)/flux_outputs/"

test: $(VENV)/.installed  ## the whole test suite, notebooks (nbval) and browser tests included
	$(PY) -m pytest
