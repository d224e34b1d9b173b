# Both targets are self-contained on a fresh machine with Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are installed first at the versions served from local disk on our machines;
# the pyproject only requires ranges, so any recent torch works elsewhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint install install-test docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PINS) || $(BIN)/pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# launch the quickstart study, then confirm its best setting on 3 fresh seeds (the honest closing numbers)
demo: install
	$(BIN)/wemem launch studies/quickstart.toml && $(BIN)/wemem confirm quickstart --seeds 3 --attacks all

# the code the linters hold: the three packages, and the tests, benchmarks, examples and docs hooks that use them
LINT_PATHS := wemem objectives search tests benchmarks examples docs/hooks

# ruff (rules and formatting) and mypy, configured in pyproject.toml (mypy checks the packages it lists there),
# and the import layering (tests/test_layout.py reads the source with ast; it takes seconds)
lint: install-test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layout.py

# a lint, format, type or layering error fails `make test` (and so CI) before pytest starts
test: lint
	$(BIN)/python -m pytest -q --durations=40 tests

# the documentation site, into site/: --strict turns every warning (a broken link or anchor, a page left out of the
# nav, a docstring mkdocstrings cannot read) into a failure. NO_MKDOCS_2_WARNING silences Material's end-of-life
# banner, which is advice about the tool, not about these docs.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .wemem-cache wemem.db site
