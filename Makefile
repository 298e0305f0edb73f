# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-fast lint check-deploy clean bench bench-quick

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## Migrate, create the demo user, start web + worker on http://127.0.0.1:8000, send demo alerts.
run: install
	VIGIL_DEBUG=1 ./scripts/run-dev.sh

## The full suite (real PostgreSQL/Redis when DATABASE_URL/CELERY_BROKER_URL are set).
test: install
	VIGIL_TESTING=1 $(PY) -m pytest $(PYTEST_ARGS)

## Everything but the browser, real-Alertmanager and fault (process-killing) tests.
test-fast: install
	VIGIL_TESTING=1 $(PY) -m pytest -m "not e2e and not faults" $(PYTEST_ARGS)

## Issue 10's benchmarks on local PostgreSQL + Redis (throwaway databases), gunicorn and a real
## worker: tables on stdout, JSON under bench-results/. `make bench BENCH_ARGS="ingest pages"`
## runs some; BENCH_SCALE=0.1 shrinks sizes and durations (see bench/__main__.py for the rest).
bench: install
	$(PY) -m bench $(BENCH_ARGS)

## The same at a tenth of the size: a couple of minutes, to try the harness.
bench-quick: install
	BENCH_SCALE=$${BENCH_SCALE:-0.1} $(PY) -m bench $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	VIGIL_DEBUG=1 $(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var

## Issue 11's fault suite alone (`make test` runs it too): a throwaway PostgreSQL (initdb + pg_ctl,
## as the postgres user when root) and redis-server on free ports, gunicorn and Celery processes
## on them, then workers killed, Redis stopped, PostgreSQL restarted, sources broken.
## VIGIL_FAULTS_TALLY=file appends one JSON line per fault survived (the README's table).
.PHONY: test-faults
test-faults: install
	VIGIL_TESTING=1 $(PY) -m pytest tests/faults $(PYTEST_ARGS)
