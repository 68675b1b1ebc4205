#!/usr/bin/env bash
# Remove the kind cluster of k8s/dev-up.sh (and with it the chart, MinIO's data and every run).
# Idempotent: nothing to remove is not an error. Also `make kind-down`. Environment: CLUSTER (okvqa).
set -euo pipefail

CLUSTER="${CLUSTER:-okvqa}"
readonly CLUSTER

command -v kind >/dev/null 2>&1 || { echo "dev-down: error: kind is not installed; nothing to remove" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "==> deleting kind cluster '$CLUSTER'" >&2
  kind delete cluster --name "$CLUSTER"
else
  echo "==> no kind cluster '$CLUSTER'; nothing to do" >&2
fi
