# Make fragment for the test control plane; the root Makefile includes it.
#   make tools     build the Go binaries that are missing (etcd, kube-*, kubectl, kwok, helm, minio)
#   make cluster   build them if needed, then run the test cluster in the foreground (Ctrl-C stops);
#                  CLUSTER_ARGS="--vela 8 --blue-vela 4" sizes the pools (see --help)
# Expects $(PY) (the root Makefile sets it to .venv/bin/python).

TOOLS_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

# Binaries are cached outside the repository, keyed by version, so a fresh clone reuses them.
CARINA_TOOLS_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/carina/tools
export CARINA_TOOLS_DIR

# Debian packages the integration tests and the launcher need (make deps installs them):
# prometheus (the real server the telemetry tests scrape with), openssl (the cluster's PKI),
# golang is not listed: the Go toolchain (1.26+) comes with the image or from go.dev.
DEBIAN_PACKAGES ?= prometheus openssl ca-certificates postgresql chromium chromium-driver

.PHONY: tools cluster tools-check tools-clean

tools:
	$(TOOLS_MK_DIR)/build.sh

tools-check:
	@$(TOOLS_MK_DIR)/build.sh --check

# $(STAMP) is the root Makefile's "venv is installed" file; empty (no prerequisite) elsewhere.
cluster: tools $(STAMP)
	$(PY) -m carina.testcluster $(CLUSTER_ARGS)

# Removes the whole cache (every version); the next `make tools` is a cold build.
tools-clean:
	rm -rf "$(CARINA_TOOLS_DIR)"
