# fleetlet — the commands a user and CI type. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast lint bench services clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job, until the agent arrives: check the example units offline, then run fleet's hello_world template
# (instance 1) in the foreground on the Docker engine, its journal on the terminal. Ctrl-C stops it.
run: install services
	$(VENV)/bin/fleetlet verify configs/units/*
	set -a; . ./.services.env; set +a; $(VENV)/bin/fleetlet run 'configs/units/hello_world@.service' --name hello_world@1.service

# The real services the integration tests need (a Docker engine, a registry mirror holding busybox); idempotent.
# Their addresses go to .services.env.
services:
	bash scripts/services.sh up

# The tests read DOCKER_HOST and friends from .services.env, exported here so that child processes see them too.
test: install services
	set -a; . ./.services.env; set +a; $(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m 'not integration'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The actor benchmark starts containers on the engine of .services.env, exported as for the tests.
bench: install services
	set -a; . ./.services.env; set +a; $(PY) -m bench

clean:
	rm -rf $(VENV) .hypothesis .mypy_cache .ruff_cache
