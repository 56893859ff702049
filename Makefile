# Two commands on a fresh machine: `make run` and `make test`. Needs only python3 (3.11+).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RENDERER := app/_render.so

.PHONY: install tools run test lint typecheck check bench lock clean

# The environment is rebuilt when a lock file or pyproject.toml change. `run` needs only
# the runtime lock; tests, lint and the bench install the development lock on top.
$(VENV)/.runtime: requirements-runtime.lock pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-runtime.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e ./client -e .
	touch $@

$(VENV)/.installed: requirements.lock pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e ./client -e .
	touch $@ $(VENV)/.runtime

install: $(VENV)/.installed $(RENDERER)

# The NDJSON and CSV renderer (app/render.c, loaded with ctypes: no Python headers). Without
# a C compiler the service still runs, and PostgreSQL renders those formats (slower).
$(RENDERER): app/render.c
	@rm -f $@; $(CC) -O2 -shared -fPIC -o $@ $< || echo "no C compiler: PostgreSQL renders NDJSON and CSV"

# With no DATABASE_URL: the embedded PostgreSQL, the demo migrated and seeded. With one:
# its datasets (datasets.toml), nothing created there.
run: $(VENV)/.runtime $(RENDERER)
	$(BIN)/rowstream serve --demo --print-curl

# Programs the tests drive besides Python: nginx (reverse proxy), pgbouncer (pooler), and
# Debian's chromium with its chromedriver (the web page's browser tests). Installed with
# apt when missing and we are root (as CI is); elsewhere, install them. Each entry is
# command:package.
TOOLS := nginx:nginx pgbouncer:pgbouncer chromium:chromium chromedriver:chromium-driver
tools:
	@missing=""; for t in $(TOOLS); do c=$${t%%:*}; command -v $$c >/dev/null 2>&1 || \
	  [ -x /usr/sbin/$$c ] || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (for the proxy, pooler and browser tests)"; \
	    apt-get update -qq >/dev/null && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make test needs:$$missing (apt-get install$$missing)"; exit 1; fi; fi

test: install tools
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check app bench client migrations tests
	$(BIN)/ruff format --check app bench client migrations tests

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

# The standard-vs-streaming benchmark (see docs/benchmarks.md). BENCH_ARGS=--big adds 5M rows.
bench: install
	$(BIN)/rowstream bench $(BENCH_ARGS)

# Regenerate requirements.lock from pyproject.toml (needs network access to PyPI).
lock: install
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--generate-hashes --quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 \
		--generate-hashes --quiet -o requirements-runtime.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
