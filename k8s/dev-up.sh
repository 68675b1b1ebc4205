#!/usr/bin/env bash
# From nothing to a kind cluster ready for `kubectl -n okvqa apply -f examples/tiny-cpu.yaml`:
#   1. a kind cluster (k8s/kind-config.yaml: 1 control plane + 2 workers, MinIO on localhost:9000)
#   2. the Kubeflow training operator, pinned, by server-side apply of its standalone overlay
#   3. the trainer/server/operator images, built and `kind load`ed (never pulled from a registry)
#   4. the okvqa chart with MinIO (k8s/values-kind.yaml), waiting until every Deployment is ready
#   5. the synthetic dataset the tiny example trains on, generated in-cluster into MinIO
# Idempotent: every step checks what is already there, so re-running after a failure resumes.
# Also `make kind-up`. Remove everything with k8s/dev-down.sh (`make kind-down`).
#
# Environment: CLUSTER (okvqa), TRAINING_OPERATOR_REF (v1.9.3), KIND_NODE_IMAGE (kind's default),
# SKIP_IMAGES=1 (images already loaded), SKIP_SEED=1. The namespace and release are fixed to "okvqa":
# examples/tiny-cpu.yaml and k8s/seed-data-job.yaml name the MinIO Service and Secret they produce.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
CLUSTER="${CLUSTER:-okvqa}"
readonly NAMESPACE=okvqa RELEASE=okvqa
# Same release the control-plane tests run (k8s/testenv/training-operator/go.mod).
TRAINING_OPERATOR_REF="${TRAINING_OPERATOR_REF:-v1.9.3}"
readonly CLUSTER TRAINING_OPERATOR_REF
readonly CONTEXT="kind-$CLUSTER"

step() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'dev-up: error: %s\n' "$*" >&2; exit 1; }

# helm and kubectl may come from k8s/tools.sh (a pinned copy in the user's cache) when not on PATH.
tools_bin="$("$ROOT/k8s/tools.sh" --print-dir)"
[[ -d "$tools_bin" ]] && PATH="$PATH:$tools_bin"

need() {
  local tool="$1" hint="$2"
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed: $hint"
}

step "checking the tools: docker, kind, kubectl, helm"
need docker "https://docs.docker.com/get-docker/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation (or: go install sigs.k8s.io/kind@latest)"
need kubectl "https://kubernetes.io/docs/tasks/tools/ (or run k8s/tools.sh)"
need helm "https://helm.sh/docs/intro/install/ (or run k8s/tools.sh)"
docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (is Docker running, may this user use it?)"

step "kind cluster '$CLUSTER'"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  info "exists; reusing it"
else
  args=(create cluster --name "$CLUSTER" --config "$ROOT/k8s/kind-config.yaml" --wait 120s)
  [[ -n "${KIND_NODE_IMAGE:-}" ]] && args+=(--image "$KIND_NODE_IMAGE")
  kind "${args[@]}"
fi
kubectl config use-context "$CONTEXT" >/dev/null
kubectl --context "$CONTEXT" wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
info "nodes ready: $(kubectl --context "$CONTEXT" get nodes -o name | tr '\n' ' ')"

step "Kubeflow training operator $TRAINING_OPERATOR_REF (server-side apply of manifests/overlays/standalone)"
kubectl --context "$CONTEXT" apply --server-side --force-conflicts \
  -k "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=$TRAINING_OPERATOR_REF" >/dev/null
kubectl --context "$CONTEXT" wait --for=condition=Established crd/pytorchjobs.kubeflow.org --timeout=60s >/dev/null
kubectl --context "$CONTEXT" -n kubeflow rollout status deployment/training-operator --timeout=300s

if [[ "${SKIP_IMAGES:-0}" == 1 ]]; then
  step "images: skipped (SKIP_IMAGES=1)"
else
  step "building the images (images/build.sh) and loading them into the kind nodes"
  "$ROOT/images/build.sh"
  "$ROOT/images/build.sh" --print-tags | while read -r image; do
    info "kind load $image"
    kind load docker-image --name "$CLUSTER" "$image" >/dev/null
  done
fi

step "chart charts/okvqa as release '$RELEASE' in namespace '$NAMESPACE' (with MinIO)"
helm --kube-context "$CONTEXT" upgrade --install "$RELEASE" "$ROOT/charts/okvqa" \
  --namespace "$NAMESPACE" --create-namespace \
  --values "$ROOT/k8s/values-kind.yaml" \
  --wait --timeout 10m
kubectl --context "$CONTEXT" -n "$NAMESPACE" wait --for=condition=Available deployment --all --timeout=300s >/dev/null
info "operator and MinIO are available"

if [[ "${SKIP_SEED:-0}" == 1 ]]; then
  step "dataset: skipped (SKIP_SEED=1)"
else
  step "synthetic dataset -> s3://okvqa/datasets/tiny (Job okvqa-seed-data)"
  job=(kubectl --context "$CONTEXT" -n "$NAMESPACE" get job okvqa-seed-data)
  if [[ "$("${job[@]}" -o jsonpath='{.status.succeeded}' 2>/dev/null || true)" == 1 ]]; then
    info "already staged"
  else
    kubectl --context "$CONTEXT" -n "$NAMESPACE" delete job okvqa-seed-data --ignore-not-found >/dev/null
    kubectl --context "$CONTEXT" -n "$NAMESPACE" apply -f "$ROOT/k8s/seed-data-job.yaml" >/dev/null
    if ! kubectl --context "$CONTEXT" -n "$NAMESPACE" wait --for=condition=Complete job/okvqa-seed-data --timeout=600s >/dev/null; then
      kubectl --context "$CONTEXT" -n "$NAMESPACE" logs job/okvqa-seed-data --tail=20 >&2 || true
      die "the dataset Job did not complete (logs above)"
    fi
    info "staged"
  fi
fi

step "ready"
cat >&2 <<EOF
    Start the tiny two-node CPU run and watch it go Training -> Serving -> Evaluating -> Succeeded:
      kubectl -n $NAMESPACE apply -f examples/tiny-cpu.yaml
      kubectl -n $NAMESPACE get finetunes -w
    MinIO's S3 API is on http://localhost:9000 (keys: kubectl -n $NAMESPACE get secret $RELEASE-s3 -o yaml).
    Remove everything: make kind-down
EOF
