# syntax=docker/dockerfile:1.7
# Operator: `okvqa-k8s operator` (kopf) with only the `kube` extra: no torch, a small image.
# Build: images/build.sh operator (context: the repository root).
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY images/pip-install.sh /usr/local/bin/okvqa-pip-install
COPY pyproject.toml ./
# Dependencies first, from pyproject.toml alone: rebuilt only when they change; then the code on its own.
RUN --mount=type=secret,id=extra-ca,required=false okvqa-pip-install --deps-only /src kube
COPY README.md ./
COPY okvqa_k8s ./okvqa_k8s
RUN --mount=type=secret,id=extra-ca,required=false okvqa-pip-install --target /opt/okvqa/site /src kube

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="okvqa-k8s operator" \
      org.opencontainers.image.description="Kubernetes operator reconciling okvqa.dev FineTunes into PyTorchJobs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 1000 okvqa \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin okvqa
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/okvqa /opt/okvqa
ENV PATH=/opt/okvqa/site/bin:/opt/venv/bin:$PATH PYTHONPATH=/opt/okvqa/site PYTHONUNBUFFERED=1
USER 1000:1000
EXPOSE 8080
CMD ["okvqa-k8s", "operator", "--help"]
