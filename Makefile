# atlas-engine: the two entry points are `make demo` and `make test` (`make bench`: a short
# benchmark round).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atlas-engine demo --out demo-output

test: $(STAMP)
	$(BIN)/ruff check atlas_engine tests benchmarks
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check atlas_engine tests benchmarks

# a short round: the kernels at a quarter of the full size, then aggregation from the demo store
bench: demo
	$(BIN)/atlas-engine bench --what kernels -- --scale 0.25
	$(BIN)/atlas-engine bench demo-output/data/ahba.zarr

clean:
	rm -rf $(VENV) demo-output .pytest_cache
