# fleetlet — the commands a user and CI type. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run stop test test-fast lint bench services etcd-cluster clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: check the example units offline, start an agent in the background with configs/fleetlet.toml,
# start fleet's hello_world.service through the CLI, and show it running. `make stop` ends it (scripts/demo.sh).
run: install services
	$(VENV)/bin/fleetlet verify configs/units/*
	set -a; . ./.services.env; set +a; bash scripts/demo.sh run

stop:
	bash scripts/demo.sh stop

# The real services the integration tests need (a Docker engine, a registry mirror holding busybox); idempotent.
# Their addresses go to .services.env.
services:
	bash scripts/services.sh up

# Also a 3-member etcd cluster on loopback (FLEETLET_ETCD_CLUSTER_URL in .services.env), to try failover by hand.
etcd-cluster:
	bash scripts/services.sh etcd-cluster

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
