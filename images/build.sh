#!/usr/bin/env bash
# Build the images of okvqa-k8s (also `make images`): trainer, server, operator, tagged
# $REGISTRY/<name>:<version of pyproject.toml>, which is what the chart, the spec's default image and
# examples/ name.
# Usage: images/build.sh [--print-tags] [NAME...]
#   --print-tags  print the image references and build nothing
# Environment: REGISTRY (ghcr.io/okvqa-k8s), DOCKER (docker), DOCKER_BUILD_ARGS (extra `docker build` args).
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
names=()
for arg in "$@"; do
  case "$arg" in
    --print-tags) print_only=1 ;;
    trainer | server | operator) names+=("$arg") ;;
    *) die "unknown image '$arg' (expected: ${ALL[*]}, or --print-tags)" ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")

if [[ "$print_only" == 1 ]]; then
  for name in "${names[@]}"; do echo "$REGISTRY/$name:$version"; done
  exit 0
fi

command -v "$DOCKER" >/dev/null 2>&1 || die "$DOCKER is not installed (https://docs.docker.com/get-docker/)"
extra=()
read -r -a extra <<<"${DOCKER_BUILD_ARGS:-}"
for name in "${names[@]}"; do
  tag="$REGISTRY/$name:$version"
  printf '==> building %s from images/%s.Dockerfile\n' "$tag" "$name" >&2
  "$DOCKER" build --file "$ROOT/images/$name.Dockerfile" --tag "$tag" --build-arg "VERSION=$version" \
    ${extra[@]+"${extra[@]}"} "$ROOT"
done
