#!/usr/bin/env bash
# The one `pip install` of okvqa-k8s. CI (.ci/run), the Makefile's venv and every image (images/*.Dockerfile)
# run this script, so the dependency set the tests exercise is the one the images ship, and a set that
# stops resolving fails CI instead of a user's `docker build`.
#
# Usage: images/pip-install.sh [--deps-only | --target DIR] SOURCE EXTRAS [PIP_OPTION...]
#   SOURCE  the project directory (pyproject.toml)
#   EXTRAS  comma-separated extras of pyproject.toml, e.g. train,serve (images) or train,serve,kube,dev (CI)
#   PIP_OPTION  passed before the requirement, e.g. -e for an editable install
#   --deps-only   install what SOURCE[EXTRAS] depends on, not the project itself (only pyproject.toml is
#                 read): the images' heavy layer, rebuilt only when the dependencies change
#   --target DIR  install the project alone (no dependencies) into DIR: the images' small code layer
# Environment:
#   PYTHON            interpreter whose pip installs (default: python3)
#   OKVQA_INSTALLER   pip (default) or uv: `uv pip install --python PYTHON` in place of pip (uv from UV, else
#                     next to PYTHON, else on PATH). The Makefile's venvs use it: with its cache warm uv links
#                     the ~3 GB of torch and CUDA wheels in ~12 s where pip unpacks them in ~110 s (2 cores).
#                     The images keep pip, so CI resolves the dependencies with both.
#   DS_PREBUILD_OPS   DeepSpeed ops to compile ahead of time, e.g. "CPU_ADAM FUSED_ADAM" (GPU images: needs
#                     nvcc and TORCH_CUDA_ARCH_LIST); the resolved DeepSpeed version is rebuilt with them.
#   OKVQA_EXTRA_CA    a PEM file of extra CA certificates (default /run/secrets/extra-ca, the build secret
#                     `images/build.sh --extra-ca-certs FILE` mounts): pip then trusts them as well as its
#                     own bundle, for builders behind a TLS-inspecting proxy. Nothing of it stays in a layer.
set -euo pipefail

die() { printf 'pip-install: error: %s\n' "$*" >&2; exit 2; }

mode=all target=""
case "${1:-}" in
  --deps-only) mode=deps; shift ;;
  --target)
    [[ $# -ge 2 ]] || die "--target needs a DIR"
    mode=target target="$2"
    shift 2
    ;;
esac
[[ $# -ge 2 ]] || die "usage: images/pip-install.sh [--deps-only | --target DIR] SOURCE EXTRAS [PIP_OPTION...]"
src="$1" extras="$2"
shift 2
[[ -f "$src/pyproject.toml" ]] || die "$src: no pyproject.toml (SOURCE must be the project directory)"
[[ "$extras" =~ ^[a-z]+(,[a-z]+)*$ ]] || die "EXTRAS '$extras': expected comma-separated names like train,serve"
py="${PYTHON:-python3}"

extra_ca="${OKVQA_EXTRA_CA:-/run/secrets/extra-ca}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
if [[ -s "$extra_ca" ]]; then
  default="$("$py" -c 'from pip._vendor import certifi; print(certifi.where())' 2>/dev/null || true)"
  for pem in "$default" /etc/ssl/certs/ca-certificates.crt "$extra_ca"; do
    if [[ -f "$pem" ]]; then cat "$pem" >>"$scratch/ca.pem"; fi
  done
  export PIP_CERT="$scratch/ca.pem"
fi

case "${OKVQA_INSTALLER:-pip}" in
  pip)
    pip=("$py" -m pip install --disable-pip-version-check)
    uninstall=("$py" -m pip uninstall --disable-pip-version-check --yes)
    ;;
  uv)
    uv="${UV:-$(dirname "$py")/uv}"
    [[ -x "$uv" ]] || uv="$(command -v uv)" || die "OKVQA_INSTALLER=uv: no uv next to $py or on PATH (pip install uv)"
    [[ -z "${DS_PREBUILD_OPS:-}" ]] || die "DS_PREBUILD_OPS: rebuilding DeepSpeed needs OKVQA_INSTALLER=pip"
    if [[ -n "${PIP_CERT:-}" ]]; then export SSL_CERT_FILE="$PIP_CERT"; fi
    pip=("$uv" pip install --python "$py")
    uninstall=("$uv" pip uninstall --python "$py")
    ;;
  *) die "OKVQA_INSTALLER '${OKVQA_INSTALLER}': expected pip or uv" ;;
esac
case "$mode" in
  deps)
    # The dependencies come from pyproject.toml alone: install it with an empty placeholder package, then
    # remove the placeholder, so no source file can invalidate this step.
    mkdir -p "$scratch/project/okvqa_k8s"
    cp "$src/pyproject.toml" "$scratch/project/"
    touch "$scratch/project/README.md" "$scratch/project/okvqa_k8s/__init__.py"
    "${pip[@]}" "$@" "$scratch/project[${extras}]"
    "${uninstall[@]}" okvqa-k8s
    ;;
  target) "${pip[@]}" --no-deps --target "$target" "$@" "$src" ;;
  all) "${pip[@]}" "$@" "${src}[${extras}]" ;;
esac

if [[ -n "${DS_PREBUILD_OPS:-}" && "$mode" != target ]]; then
  # PyPI ships DeepSpeed as source without compiled ops; rebuild that same version with them, against the
  # torch just installed (hence no build isolation and no dependency changes).
  version="$("$py" -c 'import importlib.metadata as m; print(m.version("deepspeed"))')"
  for op in $DS_PREBUILD_OPS; do
    [[ "$op" =~ ^[A-Z0-9_]+$ ]] || die "DS_PREBUILD_OPS: '$op' is not an op name like FUSED_ADAM"
    export "DS_BUILD_$op=1"
  done
  "${pip[@]}" --no-build-isolation --no-deps --force-reinstall "deepspeed==$version"
fi
