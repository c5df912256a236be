# embedserve: `make run` serves the bundled all-MiniLM-L6-v2 on 127.0.0.1:8000; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
# Elsewhere, point pip at a PyTorch CPU wheel index with TORCH_PIP_ARGS="--index-url ...".
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow test-images bench bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e '.[torch,onnx,quantize,dev]'
	@# Ray Serve is optional: when it can't be installed, only tests/deploy/test_ray.py skips (and says why).
	$(BIN)/pip install -q -e '.[ray]' || echo "embedserve: ray[serve] not installed; the Ray Serve test will skip"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/embedserve serve --host $(HOST) --port $(PORT)

# The suite without the slow tier: every route, the batcher, the models, quantize, deploy files (minutes).
# Two pytest-xdist workers, a file each at a time: much of the suite waits on sockets and subprocesses, and two
# workers took 4:57 against 6:43 for one (AMD EPYC, AVX-512 VNNI, 2 cores). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The slow tier: the images built and run (podman), image virtualenvs built from the Dockerfiles, the Infinity peer,
# Ray, aarch64 wheels.
test-slow: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -m slow $(PYTEST_ARGS)

# Of the slow tier, the images built for real with podman and run (amd64; arm64 on emulated aarch64) and
# deploy/compose.yml brought up with Redis and Prometheus. Needs root; installs podman and qemu from Debian's
# packages when missing; base roots are cached in ~/.cache/embedserve/images. See README "Images, for real".
test-images: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -m slow tests/deploy/test_images.py tests/deploy/test_compose_podman.py $(PYTEST_ARGS)

bench: install bench-peers
	$(BIN)/python -m bench

# The peers we measure against, each in its own venv (their pins clash with ours and each other's); torch first
# and pinned there too. One stamp per venv, so a test can make just the one it needs (see bench/README.md).
bench-peers: bench/.venv-infinity/.installed bench/.venv-infinity/.installed-onnx bench/.venv-litserve/.installed \
	bench/.venv-bentoml/.installed

bench/.venv-infinity/.installed:
	$(PYTHON) -m venv bench/.venv-infinity
	bench/.venv-infinity/bin/pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	bench/.venv-infinity/bin/pip install -q "infinity-emb[server,torch]==0.0.78"
	touch $@

# Infinity's ONNX engine (`infinity-onnx`): its optimum extra, pinned to the releases bench/servers.py works around.
bench/.venv-infinity/.installed-onnx: bench/.venv-infinity/.installed
	bench/.venv-infinity/bin/pip install -q "infinity-emb[server,torch,optimum]==0.0.78" optimum==2.1.0 \
		optimum-onnx==0.1.0 onnxruntime==1.32.0
	touch $@

bench/.venv-litserve/.installed:
	$(PYTHON) -m venv bench/.venv-litserve
	bench/.venv-litserve/bin/pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	bench/.venv-litserve/bin/pip install -q litserve==0.2.19 sentence-transformers==5.7.0 transformers==5.24.0
	touch $@

bench/.venv-bentoml/.installed:
	$(PYTHON) -m venv bench/.venv-bentoml
	bench/.venv-bentoml/bin/pip install -q torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	bench/.venv-bentoml/bin/pip install -q bentoml==1.4.40 sentence-transformers==5.7.0 transformers==5.24.0
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
