# resnet-deploy: `make export` builds the deployment bundles, `make test` runs the tests.
# Every target depends on `setup`, so a fresh clone needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

WEIGHTS ?=
# Signing (offline, model-signing): SIGNING_KEY=key.pem [SIGNING_CERT=leaf.pem SIGNING_CHAIN=ca.pem];
# verifying: PUBLIC_KEY=key.pub.pem or CA_CHAIN=ca.pem.
SIGNING_KEY ?=
SIGNING_CERT ?=
SIGNING_CHAIN ?=
PUBLIC_KEY ?=
CA_CHAIN ?=
SIGN_ARGS = $(if $(SIGNING_CERT),--certificate $(SIGNING_CERT)) $(if $(SIGNING_CHAIN),--certificate-chain $(SIGNING_CHAIN))
CONFIG ?= configs/variants.toml
OUT ?= dist
RUNS ?= runs
# The newest bundle directory in $(OUT)/ (highest <name>-<version> holding a manifest.json).
BUNDLE ?= $(shell ls -d $(OUT)/*/manifest.json 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname)
PYTEST_ARGS ?=
# pytest-xdist workers for both test targets (`--dist loadgroup`: the e2e tests are two groups that
# build disjoint session artifacts, tests/conftest.py e2e_group, so nothing is built twice).
TEST_WORKERS ?= 2

.PHONY: help setup setup-gpu browser train export verify test test-fast lint bench serve parity-gpu lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

setup: $(STAMP) ## create .venv and install the pinned dependencies (idempotent)

# One resolver pass: uv (pinned in the lock, bootstrapped with pip) resolves the lock (exact pins,
# the whole set) and fetches and unpacks the wheels in parallel, then installs the project itself
# without resolving again (--no-deps --no-build-isolation). Measured from an empty cache on 2 cores
# (Intel Xeon): 115 s with pip, 39 s with uv (the .pyc files compiled, as pip does). Where uv cannot be installed or cannot install the
# lock (an index only pip is configured for, say), pip does the same two installs. uv's cache is
# $$UV_CACHE_DIR or ~/.cache/uv. Says how long it took, apart from training and export (`make export`).
# Back from `make setup-gpu`, the CPU and GPU builds of ONNX Runtime must not both be installed.
UV_PIN = $(shell sed -n 's/^uv==//p' requirements.lock)
$(STAMP): requirements.lock pyproject.toml
	@set -e; start=$$(date +%s); \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip uninstall --quiet --yes onnxruntime-gpu >/dev/null 2>&1 || true; \
	if $(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_PIN)" && \
	   echo "$(VENV)/bin/uv pip install --compile-bytecode -r requirements.lock && $(VENV)/bin/uv pip install --no-deps -e ." && \
	   $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.lock && \
	   $(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .; then how=uv; else \
	  echo "uv could not install the lock; installing it with pip instead" >&2; how=pip; \
	  echo "$(PY) -m pip install -r requirements.lock && $(PY) -m pip install --no-deps -e ."; \
	  $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock; \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .; fi; \
	touch $(STAMP); echo "setup: $$(( $$(date +%s) - start )) s (.venv from requirements.lock, with $$how)"

setup-gpu: setup ## swap in the GPU builds (tensorflow[and-cuda], onnxruntime-gpu) and check the CUDA provider
	@# ONNX Runtime's docs: install onnxruntime or onnxruntime-gpu, never both (they share the
	@# `onnxruntime` module, and with both the CUDA provider can go missing; the GPU parity rows
	@# would then read "skipped: no GPU" on a GPU machine).
	$(PY) -m pip uninstall --quiet --yes onnxruntime
	$(PY) -m pip install --quiet "tensorflow[and-cuda]==2.21.0" "onnxruntime-gpu==$$(sed -n 's/^onnxruntime==//p' requirements.lock)"
	$(PY) -c "import onnxruntime as o, sys; p = o.get_available_providers(); \
	  sys.exit(0 if 'CUDAExecutionProvider' in p else f'error: onnxruntime-gpu offers no CUDAExecutionProvider ({p}); reinstall it: make setup-gpu')"
	@rm -f $(STAMP)  # the next `make setup` puts the CPU onnxruntime back

train: setup ## train every configured variant that has `data` (cached runs in $(RUNS)/)
	$(VENV)/bin/resnet-deploy train --config $(CONFIG) --runs $(RUNS) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(WAIT),--wait)

export: setup ## train (or reuse the cached runs), build, export, check parity and bundle every variant into $(OUT)/
	$(VENV)/bin/resnet-deploy bundle --config $(CONFIG) --out $(OUT) --runs $(RUNS) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
	  $(if $(SIGNING_KEY),--signing-key $(SIGNING_KEY) $(SIGN_ARGS)) $(if $(WAIT),--wait)

verify: setup ## check the newest bundle: signature (PUBLIC_KEY= or CA_CHAIN=), checksums, parity
	@test -n "$(BUNDLE)" || { echo "error: no bundle in $(OUT)/; run make export first" >&2; exit 2; }
	$(VENV)/bin/resnet-deploy verify $(BUNDLE) $(if $(PUBLIC_KEY),--public-key $(PUBLIC_KEY)) \
	  $(if $(CA_CHAIN),--certificate-chain $(CA_CHAIN))

# The report's browser test (tests/export/test_selfdoc.py) drives Debian's `chromium` headless; the
# test targets install it (apt-get, as root), `make export` does not need it.
browser: ## install headless Chromium for the report.html browser test (Debian's chromium package)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the report.html browser test needs it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser test will report 'skipped: no chromium'" >&2

# `make test` ends with the 25 tests that used the most CPU (tests/cpu_durations.py): on 2 cores the
# suite is CPU-bound, so that list, not the wall-time one, says where its time goes.
test: setup browser ## run the whole test suite (what CI runs)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --cpu-durations=25 $(PYTEST_ARGS)

test-fast: setup browser ## the inner loop: unit + integration tests only (no ResNet50 exports, servers, bench)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "unit or integration" $(PYTEST_ARGS)

lint: setup ## ruff (style, imports, bugbear) and mypy (export/, serving/)
	$(VENV)/bin/ruff check export serving tests
	$(VENV)/bin/mypy export serving

bench: setup ## benchmark every artifact of the newest bundle in $(OUT)/
	@test -n "$(BUNDLE)" || { echo "error: no bundle in $(OUT)/; run make export first" >&2; exit 2; }
	$(VENV)/bin/resnet-deploy bench $(BUNDLE) $(if $(WAIT),--wait)
	$(if $(SIGNING_KEY),$(VENV)/bin/resnet-deploy sign $(BUNDLE) --private-key $(SIGNING_KEY) $(SIGN_ARGS))

serve: setup ## serve the newest bundle (TF Serving if installed, else the local server)
	$(VENV)/bin/resnet-deploy serve $(BUNDLE)

parity-gpu: setup-gpu ## run the parity suite on the GPU (skipped rows say "no GPU")
	scripts/gpu-parity.sh

lock: ## re-resolve the pins into requirements.lock (needs network)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet -e '.[test]' uv  # uv: make setup's installer
	{ echo "# Exact pins for the default (CPU) install; regenerate with: make lock"; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock && rm -rf .lock-venv

clean: ## remove build outputs (keeps .venv)
	rm -rf build *.egg-info .pytest_cache $(OUT)/.*.partial
