# syntax=docker/dockerfile:1.7
# Built-in inference server: `okvqa-k8s serve --model DIR` (OpenAI-compatible) for engine: builtin.
# engine: vllm uses vLLM's own upstream image instead (pinned in okvqa_k8s/kube/render.py).
# The PyPI torch wheel carries its CUDA libraries, so a slim Python base serves on GPUs as well as CPUs.
# Build: images/build.sh server (context: the repository root).
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY images/pip-install.sh /usr/local/bin/okvqa-pip-install
COPY pyproject.toml ./
# Dependencies first, from pyproject.toml alone: rebuilt only when they change; then the code on its own.
RUN --mount=type=secret,id=extra-ca,required=false okvqa-pip-install --deps-only /src train,serve
COPY README.md ./
COPY okvqa_k8s ./okvqa_k8s
RUN --mount=type=secret,id=extra-ca,required=false okvqa-pip-install --target /opt/okvqa/site /src train,serve

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="okvqa-k8s server" \
      org.opencontainers.image.description="OpenAI-compatible server for fine-tuned LLaVA-1.5 models (okvqa-k8s serve)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 1000 okvqa \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/okvqa --shell /usr/sbin/nologin okvqa
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/okvqa /opt/okvqa
ENV PATH=/opt/okvqa/site/bin:/opt/venv/bin:$PATH PYTHONPATH=/opt/okvqa/site PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1
USER 1000:1000
WORKDIR /home/okvqa
EXPOSE 8000
CMD ["okvqa-k8s", "serve", "--help"]
