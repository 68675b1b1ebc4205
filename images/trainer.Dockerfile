# syntax=docker/dockerfile:1.7
# Trainer: `torchrun --no-python okvqa-k8s train` with DeepSpeed on the PyTorchJob pods. The same image
# runs the evaluation Jobs, the model-pull init containers and (engine: builtin) the inference server.
# Build: images/build.sh trainer (context: the repository root; see .dockerignore).
#
# Two variants of one file, chosen by build args:
#   ACCELERATOR=cuda (default): built on the CUDA devel image, run on the CUDA runtime image, DeepSpeed's
#     optimiser ops compiled ahead for the GPU architectures below with DS_ACCELERATOR=cuda (a builder has
#     no GPU, so DeepSpeed would otherwise detect its CPU accelerator and ship CPU ops) and checked.
#   ACCELERATOR=cpu: BUILD_IMAGE and RUNTIME_IMAGE are any Debian/Ubuntu image with python3 and venv (the
#     offline local cluster uses a debootstrapped bookworm); no ops compiled, nothing checked for CUDA.

# CUDA of the base must have the major version of the pinned torch wheel (torch==2.13.0 is built for
# CUDA 13.0; checked below), or DeepSpeed's compiled ops cannot load next to torch.
ARG CUDA_VERSION=13.0.1
ARG UBUNTU=ubuntu24.04
ARG BUILD_IMAGE=nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU}
ARG RUNTIME_IMAGE=nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}

FROM ${BUILD_IMAGE} AS build
ARG ACCELERATOR=cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# hadolint ignore=DL3008
RUN if [ "$ACCELERATOR" = cuda ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-dev python3-venv build-essential ninja-build \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY images/pip-install.sh /usr/local/bin/okvqa-pip-install
COPY pyproject.toml ./
# Dependencies first, from pyproject.toml alone: this heavy layer (torch, DeepSpeed, ops) is rebuilt only
# when the dependencies change. The ops: compiled for these GPU architectures (A100, A10/RTX 30, L4/L40,
# H100, B200), instead of JIT-compiling them in every pod at start (which would need nvcc at run time).
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0"
RUN --mount=type=secret,id=extra-ca,required=false \
    if [ "$ACCELERATOR" = cuda ]; then \
      export DS_ACCELERATOR=cuda DS_PREBUILD_OPS="CPU_ADAM FUSED_ADAM" TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST"; \
    fi \
    && okvqa-pip-install --deps-only /src train,serve
RUN if [ "$ACCELERATOR" = cuda ]; then \
      python -c "import os, torch; want = os.environ['CUDA_VERSION'].split('.')[0]; \
assert torch.version.cuda and torch.version.cuda.split('.')[0] == want, f'torch CUDA {torch.version.cuda} vs base {want}'" \
      && python -c "from deepspeed.git_version_info import installed_ops as ops, accelerator_name as name; \
assert name == 'cuda', f'DeepSpeed ops were built for {name!r}, not cuda'; \
assert ops.get('cpu_adam') and ops.get('fused_adam'), f'DeepSpeed ops not prebuilt: {ops}'"; \
    fi
# Then the code, into its own small directory (a code change rebuilds only this and what follows).
COPY README.md ./
COPY okvqa_k8s ./okvqa_k8s
RUN --mount=type=secret,id=extra-ca,required=false \
    okvqa-pip-install --target /opt/okvqa/site /src train,serve
ENV PYTHONPATH=/opt/okvqa/site
# The toy LLaVA of examples/tiny-cpu.yaml, built from config (no download): the kind quick start needs it.
# transformers writes model.safetensors 0600 (through a private temp file); the pods' uid 1000 reads it.
RUN DS_ACCELERATOR=cpu python -c "from okvqa_k8s.train.tiny import build_tiny_model; \
build_tiny_model('/opt/okvqa/models/tiny-llava')" \
    && chmod -R a+rX /opt/okvqa/models

FROM ${RUNTIME_IMAGE}
ARG ACCELERATOR=cuda
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="okvqa-k8s trainer" \
      org.opencontainers.image.description="LoRA + DeepSpeed fine-tuning of LLaVA-1.5 on OK-VQA (okvqa-k8s train/eval/serve)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN if [ "$ACCELERATOR" = cuda ]; then \
      apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*; \
    fi
# Pods run as uid/gid 1000 (okvqa_k8s/kube/render.py); Ubuntu's own uid 1000 user gives way to ours.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && groupadd --gid 1000 okvqa \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/okvqa --shell /usr/sbin/nologin okvqa \
    && mkdir -p /okvqa/scratch && chown 1000:1000 /okvqa/scratch
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/okvqa /opt/okvqa
ENV PATH=/opt/okvqa/site/bin:/opt/venv/bin:$PATH PYTHONPATH=/opt/okvqa/site PYTHONUNBUFFERED=1 \
    OKVQA_SCRATCH=/okvqa/scratch HF_HUB_DISABLE_TELEMETRY=1
USER 1000:1000
WORKDIR /home/okvqa
CMD ["okvqa-k8s", "--help"]
