# Two commands a user needs: `make run` and `make test`. Everything else is installed from
# pyproject.toml + uv.lock; the only thing assumed on the machine is python3 (3.11+) and make.
PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8

.PHONY: install run test lint bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/pipeline: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

install: $(BIN)/pipeline

# Demo: start the bundled sandbox API on a free loopback port, run the sample through it,
# stop the sandbox, print the summary.
run: install
	$(BIN)/python -m pipeline.demo data/sample.csv -o out/results.parquet

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check pipeline bench tests
	$(BIN)/ruff format --check pipeline bench tests
	$(BIN)/mypy

# Benchmarks (figures in BENCHMARKS.md): a quick set by default, `make bench ARGS=--large`
# for 200 locations and 10 M rows.
bench: install
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) out .pytest_cache .mypy_cache .ruff_cache
