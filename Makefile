# Two commands do all the set-up: `make demo` and `make test` (each builds .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,figures,data]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/compare_modes.py

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules src/fnn

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
