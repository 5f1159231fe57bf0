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

# The main job. For now: check the example units offline, as `fleetctl` users would before submitting them.
run: install
	$(VENV)/bin/fleetlet verify configs/units/*

# Services the tests need (dockerd, etcd) are started here by later issues; the unit-file model needs none.
services:
	@true

test: install services
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m 'not integration'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .hypothesis .mypy_cache .ruff_cache
