#!/usr/bin/env bash
# Build the images of okvqa-k8s (also `make images`): trainer, server, operator, tagged
# $REGISTRY/<name>:<version of pyproject.toml>, which is what the chart, the spec's default image and
# examples/ name.
#
# Two modes:
#   Docker (default): `docker build` of images/<name>.Dockerfile, for kind and for pushing to a registry.
#   --offline: no Docker, no registry. BuildKit (from `make testenv`) builds the same Dockerfiles into the
#     containerd of the local real-node cluster, on a Debian bookworm base made by debootstrap from
#     Debian's packages (`python -m okvqa_testenv images build`, what `make testenv-images` runs; root).
#     The trainer is built as its CPU variant (ACCELERATOR=cpu) and also serves and evaluates, so the
#     default set is trainer and operator; MinIO and mc images come from their Go-built binaries.
#
# Usage: images/build.sh [--print-tags] [--offline] [--extra-ca-certs FILE] [NAME...]
#   --print-tags       print the image references and build nothing
#   --offline          build with BuildKit into the local cluster's containerd (see above)
#   --extra-ca-certs F a PEM file of CA certificates pip must trust while building (a TLS-inspecting proxy);
#                      passed as the build secret `extra-ca`, so it stays out of every layer. Offline
#                      builds take the build machine's /usr/local/share/ca-certificates by default.
# Environment: REGISTRY (ghcr.io/okvqa-k8s), DOCKER (docker), DOCKER_BUILD_ARGS (extra `docker build` args,
#   e.g. "--build-arg ACCELERATOR=cpu --build-arg BUILD_IMAGE=python:3.12-slim-bookworm
#   --build-arg RUNTIME_IMAGE=python:3.12-slim-bookworm" for a CPU-only trainer), PYTHON (offline: the
#   interpreter with okvqa_testenv installed; default .venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
REGISTRY="${REGISTRY:-ghcr.io/okvqa-k8s}"
DOCKER="${DOCKER:-docker}"
readonly ALL=(trainer server operator)

die() { printf 'images: error: %s\n' "$*" >&2; exit 2; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
[[ -n "$version" ]] || die "no version in $ROOT/pyproject.toml"

print_only=0
offline=0
extra_ca=""
names=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --print-tags) print_only=1 ;;
    --offline) offline=1 ;;
    --extra-ca-certs)
      [[ $# -ge 2 ]] || die "--extra-ca-certs needs a FILE"
      extra_ca="$2"
      shift
      [[ -s "$extra_ca" ]] || die "--extra-ca-certs: $extra_ca is not a non-empty file"
      ;;
    trainer | server | operator) names+=("$1") ;;
    *) die "unknown argument '$1' (expected: ${ALL[*]}, --print-tags, --offline or --extra-ca-certs FILE)" ;;
  esac
  shift
done

if [[ "$print_only" == 1 ]]; then
  for name in "${names[@]:-${ALL[@]}}"; do echo "$REGISTRY/$name:$version"; done
  exit 0
fi

if [[ "$offline" == 1 ]]; then
  [[ "$REGISTRY" == ghcr.io/okvqa-k8s ]] || die "--offline builds the names the chart uses; REGISTRY cannot change"
  py="${PYTHON:-$ROOT/.venv/bin/python}"
  [[ -n "$extra_ca" ]] && export OKVQA_EXTRA_CA_CERTS="$extra_ca"
  exec "$py" -m okvqa_testenv images build --repo "$ROOT" "${names[@]}"
fi

[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
command -v "$DOCKER" >/dev/null 2>&1 || die "$DOCKER is not installed (https://docs.docker.com/get-docker/)"
extra=()
read -r -a extra <<<"${DOCKER_BUILD_ARGS:-}"
if [[ -n "$extra_ca" ]]; then
  extra+=(--secret "id=extra-ca,src=$extra_ca")
  export DOCKER_BUILDKIT=1
fi
for name in "${names[@]}"; do
  tag="$REGISTRY/$name:$version"
  printf '==> building %s from images/%s.Dockerfile\n' "$tag" "$name" >&2
  "$DOCKER" build --file "$ROOT/images/$name.Dockerfile" --tag "$tag" --build-arg "VERSION=$version" \
    ${extra[@]+"${extra[@]}"} "$ROOT"
done
