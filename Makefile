# hvdtrain: the two set-up commands of the README, and a few helpers.
# Every target installs what it needs first (scripts/setup.sh is fast when nothing is missing).

VENV := .venv
PY := $(VENV)/bin/python
# Open MPI refuses to run as root without these (containers, CI); harmless for other users. (hvdtrain run sets
# them itself when root; the tests also launch horovodrun and mpirun directly.)
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: setup digits test lint

setup:
	bash scripts/setup.sh

## The main job: the digits recipe on 2 ranks, ending with its test accuracy.
digits: setup
	$(VENV)/bin/hvdtrain run digits -np 2

## The tests (unit and multi-process), after a lint.
test: setup lint
	$(PY) -m pytest -q -ra

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
