# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit proto bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/reconciler daemon -c $(CONFIG)

# Debian packages the tests need when running as root (btrfs-progs for loop-device tests,
# systemd for unit verification, borg/restic/rsync for benchmarks). Skipped when not root.
system-deps:
	@scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/ruff format --check reconciler tests bench
	$(BIN)/mypy reconciler tests bench
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q

test: system-deps lint unit

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .pytest_cache .ruff_cache
