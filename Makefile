# Carina's commands. README's two: `make run` and `make test`; each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := operator,server,train,judge,ray,dev
STAMP := $(VENV)/.carina-installed
PYTEST_ARGS ?=

# tools/tools.mk builds the test control plane's Go binaries (`make tools`, `make cluster`)
# and names the Debian packages the tests need (DEBIAN_PACKAGES).
-include tools/tools.mk
DEBIAN_PACKAGES ?= openssl

.PHONY: help venv deps test unit integration e2e lint lint-mypy crds run bench clean helm-check

help:
	@echo "make run    run the example pretraining job on this machine"
	@echo "make test   install what the tests need, then run unit, integration and e2e tests"
	@echo "make lint   ruff, format check, mypy, import-linter"
	@echo "make crds   regenerate helm/carina/crds/ from the API models"
	@echo "make tools  build the test control plane's binaries (cached)"
	@echo "make cluster  start a local Kubernetes control plane with fake GPU nodes"

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

deps:
	scripts/install-debian-packages.sh $(DEBIAN_PACKAGES)

# pytest exits 5 when a selection collects no tests; an empty tier is not a failure.
define run_pytest
	set +e; $(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc
endef

test: venv deps tools helm-check
	CARINA_REQUIRE_CLUSTER=1 $(call run_pytest,tests/unit tests/integration tests/e2e)

unit: venv
	$(call run_pytest,tests/unit)

integration: venv deps tools
	CARINA_REQUIRE_CLUSTER=1 $(call run_pytest,tests/integration)

e2e: venv
	$(call run_pytest,tests/e2e)

lint: venv lint-mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd $(CURDIR) && $(VENV)/bin/lint-imports

# mypy cannot follow the editable install's finder hook that maps platform/ and the others
# under `carina.`, and a top-level folder named `platform` would shadow the standard library.
# So it reads them through build/mypy/carina/ (git-ignored, rebuilt here on each run), a tree
# of symlinks to the folders that pyproject's mypy_path points at: it sees the real package
# names, and reports each error at its folder's path (the sed strips the tree's prefix).
# Strict for carina.platform and carina.operators (pyproject's [[tool.mypy.overrides]]).
MYPY_TREE := build/mypy/carina
MYPY_PACKAGES := platform operators workloads testcluster

lint-mypy: venv
	mkdir -p $(MYPY_TREE)
	test -e $(MYPY_TREE)/__init__.py || touch $(MYPY_TREE)/__init__.py
	for pkg in $(MYPY_PACKAGES); do ln -sfn ../../../$$pkg $(MYPY_TREE)/$$pkg; done
	set -o pipefail; $(VENV)/bin/mypy $(addprefix -p carina.,$(MYPY_PACKAGES)) \
		| sed -e 's#^$(MYPY_TREE)/##'
	$(VENV)/bin/mypy dashboards/generate.py scripts/helm-readme.py

# Lint, render, server-side dry-run and install the chart against the test control plane.
helm-check: venv tools
	PY=$(PY) scripts/helm-check.sh

crds: venv
	$(PY) -m carina.platform crds --output helm/carina/crds

# The example pretraining job on the embedded platform: final status, metrics summary,
# checkpoint location and a loss-curve image in runs/embedded/.
run: venv
	PY=$(PY) scripts/make-run.sh

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
