# Two commands a user needs: `make run` and `make test`. Everything else is installed from
# pyproject.toml + uv.lock; the only thing assumed on the machine is python3 (3.11+) and make.
PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8

.PHONY: install run test test-fast lint bench clean

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

# Two tests drive real programs: headless Chromium (the HTML report) and the Prometheus
# Pushgateway (metrics). Debian's packages are installed when missing (CI runs as root on
# Debian); elsewhere a line says so, and those tests skip (the browser's fails under CI).
# apt drops to its _apt user to fetch and verify; where /tmp is not world-writable (mode 700,
# seen on this project's VM) that user cannot write its temporary files, every index fails
# its signature check and the browser is not installed. As root, apt may stay root.
APT_OPTS := $(if $(filter 0,$(shell id -u)),-o APT::Sandbox::User=root,)

test: install
	@missing=""; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	command -v prometheus-pushgateway >/dev/null || missing="$$missing prometheus-pushgateway"; \
	if [ -n "$$missing" ]; then \
		(apt-get $(APT_OPTS) update -qq && DEBIAN_FRONTEND=noninteractive apt-get $(APT_OPTS) install -y -qq $$missing >/dev/null) || \
		echo "make: could not install$$missing (apt-get, as root); some tests need it" >&2; \
	fi
	@status=0; \
	$(BIN)/pytest -q -m timing || [ $$? -eq 5 ] || status=1; \
	$(BIN)/pytest -q -m "not timing" -n $(TEST_WORKERS) --dist worksteal || status=1; \
	exit $$status

# What a test costs (markers in pyproject.toml; tests/conftest.py sets `processes` and
# `browser` from what each test uses, the tests mark `timing`). `make test-fast`: the tests
# that start no program or browser and depend on no timing, on TEST_WORKERS workers: under
# a minute on 2 cores.
# `make test` (above): the timing tests alone first (exit 5, none selected, is fine), then
# all the others on TEST_WORKERS pytest-xdist workers. Figures in BENCHMARKS.md.
TEST_WORKERS ?= 2
test-fast: install
	$(BIN)/pytest -q -m "not processes and not browser and not timing" -n $(TEST_WORKERS)

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
