# clusterregistry — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test test-unit test-integration test-e2e lint bench demo clean system-packages

setup: $(STAMP) system-packages

# Three distributions, all editable (the tests see source edits): the product (the image
# installs it alone), kubesim, and the sandbox, which adds `demo` and `sandbox` to the
# clusterregistry command line. The venv is rebuilt only when a pyproject.toml changes.
DISTRIBUTIONS := pyproject.toml pkg/kubesim/pyproject.toml pkg/clusterregistry_sandbox/pyproject.toml
$(STAMP): $(DISTRIBUTIONS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e pkg/kubesim -e pkg/clusterregistry_sandbox
	@touch $(STAMP)

# Debian's distribution registry, skopeo, wrk (the webhook bench) and Prometheus (the
# dashboard test): real peers for the tests and the sandbox.
system-packages:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: setup
	$(BIN)/pytest -q $(PYTEST_ARGS) tests

test-unit: setup
	$(BIN)/pytest -q $(PYTEST_ARGS) tests/unit

test-integration: setup
	$(BIN)/pytest -q $(PYTEST_ARGS) tests/integration

test-e2e: setup
	$(BIN)/pytest -q $(PYTEST_ARGS) tests/e2e

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python -m bench

demo: setup
	$(BIN)/clusterregistry demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info pkg/*.egg-info \
		pkg/*/*.egg-info pkg/*/build
