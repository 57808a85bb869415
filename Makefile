# hvdtrain: the two set-up commands of the README, and a few helpers.
# Every target installs what it needs first (scripts/setup.sh is fast when nothing is missing).
#
# STACK picks TensorFlow: tf2.21 (default; Keras 3, numpy 2, in .venv) or tf2.15 (Keras 2, numpy 1, in .venv-tf2.15).
# `make test` runs the whole suite on every stack in STACKS; `make test STACKS=tf2.15` on one.

STACK ?= tf2.21
STACKS ?= tf2.21 tf2.15
venv_of = $(if $(filter tf2.21,$(1)),.venv,.venv-$(1))
VENV := $(call venv_of,$(STACK))
# Open MPI refuses to run as root without these (containers, CI); harmless for other users. (hvdtrain run sets
# them itself when root; the tests also launch horovodrun and mpirun directly.)
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: setup digits test test-stack lint

setup:
	HVDTRAIN_STACK=$(STACK) HVDTRAIN_VENV=$(abspath $(VENV)) bash scripts/setup.sh

## The main job: the digits recipe on 2 ranks, ending with its test accuracy.
digits: setup
	$(VENV)/bin/hvdtrain run digits -np 2

## The tests (unit and multi-process) on every stack, after a lint.
test: lint
	@for stack in $(STACKS); do $(MAKE) --no-print-directory test-stack STACK=$$stack || exit 1; done

## The whole suite on one stack.
test-stack: setup
	@echo "== tests on $(STACK) ($(VENV))"
	$(VENV)/bin/python -m pytest -q -ra

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
