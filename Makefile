# Two commands do all the set-up: `make demo` and `make test` (each builds .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The docs toolchain has its own stamp: `make test` never installs it.
DOCS_STAMP := $(VENV)/.installed-docs
# So has the comparison with BackPACK and Opacus (PyTorch, large): `make compare` only.
COMPARE_STAMP := $(VENV)/.installed-compare

.PHONY: demo test lint bench figures clean docs docs-check docs-serve compare

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,figures,data]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/compare_modes.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules src/fnn

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

$(COMPARE_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,figures,data,compare]"
	touch $(COMPARE_STAMP)

# fnn beside BackPACK and Opacus at 784-512-512-10, batch 256: results/compare_backpack.{md,json}
compare: $(COMPARE_STAMP)
	PYTHONPATH=src $(BIN)/python benchmarks/compare_backpack.py --full

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,figures,data,docs]"
	touch $(DOCS_STAMP)

# The site, strict: a warning, a broken cross-reference or a failing tutorial cell fails it.
# PYTHONPATH=src: the API pages and the tutorials use this checkout's fnn.
# It executes every tutorial: a few minutes on two cores; it prints how long it took.
docs: $(DOCS_STAMP)
	@echo "make docs: building site/ (runs every tutorial; a few minutes on two cores)"
	@start=$$(date +%s); \
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=src $(BIN)/python -m mkdocs build --strict && \
	echo "make docs: site/ built in $$(( $$(date +%s) - start )) s"

# Every page of the built site/ (run `make docs` first) in headless Chromium
# (apt-get install chromium chromium-driver). Not rebuilt here: CI builds once, checks once.
docs-check: $(DOCS_STAMP)
	$(BIN)/python docs/_tools/docs_check.py --site site --out results/docs

# Browse the built site on this machine only (127.0.0.1, not every interface).
docs-serve:
	$(BIN)/python -m http.server --directory site --bind 127.0.0.1 8000

clean:
	rm -rf $(VENV) results site .pytest_cache .hypothesis
